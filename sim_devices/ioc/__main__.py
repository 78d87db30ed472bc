"""``python -m sdl.sim_devices.ioc``: serve the simulated lab over Channel Access until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from sdl.errors import SdlError
    from sdl.sim_devices.ioc.server import DEFAULT_PORT, DEFAULT_PREFIX, IOC_ALIASES, IOC_NAMES, list_pvs, run_ioc

    ap = argparse.ArgumentParser(prog="python -m sdl.sim_devices.ioc", description=__doc__)
    ap.add_argument("--instrument", default="sim-xrd")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefix", default=DEFAULT_PREFIX)
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="EPICS_CA_SERVER_PORT (UDP search port)")
    ap.add_argument("--host", default="127.0.0.1", help="interface to serve on")
    ap.add_argument("--names", default="all",
                    help=f"comma-separated IOCs: {', '.join(IOC_NAMES)}, or {', '.join(IOC_ALIASES)}, all")
    ap.add_argument("--time-scale", type=float, default=0.0)
    ap.add_argument("--n-slots", type=int, default=24)
    ap.add_argument("--options", default=None, help="instrument options as JSON")
    ap.add_argument("--pva-port", type=int, default=None, help="serve PVAccess too, on this UDP search port")
    ap.add_argument("--list-pvs", action="store_true", help="print the PVs and exit")
    args = ap.parse_args(argv)
    try:
        if args.list_pvs:
            for row in list_pvs(args.names, args.prefix, instrument_name=args.instrument, seed=args.seed):
                print(f"{row['name']:36s} {row['type']:14s} {row['access']:3s} {row['doc']}")
            return 0
        run_ioc(args.names, args.prefix, instrument_name=args.instrument, seed=args.seed, port=args.port,
                host=args.host, time_scale=args.time_scale, n_slots=args.n_slots,
                options=json.loads(args.options) if args.options else None, pva_port=args.pva_port)
    except SdlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
