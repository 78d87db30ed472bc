"""Loop the facility crash scenarios N times and print pass counts (issue 6: "the crash
tests pass 20 times in a row").

    python benchmarks/crash_loop.py                    # 20 loops of a, a2, b on SQLite
    python benchmarks/crash_loop.py --pg -n 20         # on a private PostgreSQL cluster, with c
    python benchmarks/crash_loop.py --only a -n 20     # one scenario
    python benchmarks/crash_loop.py --only w -n 1 --kills 20   # workflows: 20 service kills

Scenarios (sdl.service.crashtest): a = kill -9 a worker mid-exposure, another worker
recovers the item; a2 = lease fencing and a clean SIGTERM stop; b = kill -9 the service
during a campaign and restart it; c = restart PostgreSQL during a campaign (--pg only);
w (only when asked) = kill -9 the service ``--kills`` times while it runs a workflow
campaign started over HTTP, station workers in processes (sdl.workflows.crashloop).
Each loop uses a fresh store (SQLite file or a new database on the cluster).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from sdl.service import crashtest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--loops", type=int, default=20)
    ap.add_argument("--pg", action="store_true", help="run on a private PostgreSQL cluster (adds scenario c)")
    ap.add_argument("--url", help="a PostgreSQL server URL to make databases on (instead of a private cluster)")
    ap.add_argument("--only", default="", help="comma-separated scenarios: a,a2,b,c")
    ap.add_argument("--keep", action="store_true", help="keep the logs of every loop")
    ap.add_argument("--kills", type=int, default=20, help="scenario w: service kills per loop")
    ap.add_argument("--budget", type=int, default=0, help="scenario w: workflows (default 3 x kills)")
    args = ap.parse_args()

    cluster = None
    if args.pg and not args.url:
        from sdl.service.pgcluster import PrivateCluster

        cluster = PrivateCluster().start()
    names = [s for s in (args.only.split(",") if args.only else ["a", "a2", "b", "c"]) if s]
    if not (args.pg or args.url) and "c" in names:
        names.remove("c")
        print("scenario c (database restart) needs PostgreSQL: --pg", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="sdl-crash-"))
    counts = {n: [0, 0] for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    seq = 0

    def store_url(folder: Path) -> str:
        nonlocal seq
        seq += 1
        if cluster is not None:
            return cluster.create_database(f"loop_{seq}")
        if args.url:
            import psycopg

            from sdl.service.relay import psycopg_dsn

            with psycopg.connect(psycopg_dsn(args.url), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE loop_{int(time.time())}_{seq}")
            return args.url.rsplit("/", 1)[0] + f"/loop_{int(time.time())}_{seq}"
        return f"sqlite:///{(folder / 'facility.sqlite').resolve()}"

    try:
        for i in range(args.loops):
            for name in names:
                folder = root / f"{i:03d}-{name}"
                folder.mkdir(parents=True)
                t0 = time.monotonic()
                try:
                    if name == "a":
                        out = crashtest.scenario_worker_kill(folder, store_url(folder))
                    elif name == "a2":
                        out = crashtest.scenario_fencing_and_cleanup(folder, store_url(folder))
                    elif name == "b":
                        out = crashtest.scenario_service_kill(folder, store_url(folder))
                    elif name == "w":
                        from sdl.workflows.crashloop import service_kill_loop

                        out = service_kill_loop(folder / "lab", store_url(folder), kills=args.kills,
                                                budget=args.budget or 3 * args.kills, seed=i)
                        if out["kills"] < args.kills:
                            raise AssertionError(f"the campaign ended after {out['kills']} kills: raise --budget")
                    elif name == "c":
                        if cluster is None:
                            raise RuntimeError("scenario c needs the private cluster (--pg without --url)")
                        out = crashtest.scenario_db_restart(folder, cluster)
                    else:
                        raise SystemExit(f"unknown scenario {name!r}")
                    counts[name][0] += 1
                    status = "pass"
                    if not args.keep:
                        shutil.rmtree(folder, ignore_errors=True)
                except Exception as exc:  # noqa: BLE001 - counted and shown
                    counts[name][1] += 1
                    out = {}
                    status = "FAIL"
                    traceback.print_exc()
                    print(f"  logs kept in {folder}: {exc!s:.300}", file=sys.stderr)
                dt = time.monotonic() - t0
                times[name].append(dt)
                print(f"loop {i + 1:3d}/{args.loops} {name:>2}: {status} in {dt:5.1f} s {out}", flush=True)
    finally:
        if cluster is not None:
            cluster.cleanup()
    print()
    print(f"store: {'PostgreSQL' if (args.pg or args.url) else 'SQLite'}; loops: {args.loops}")
    for name in names:
        ok, bad = counts[name]
        t = times[name]
        print(f"  scenario {name:>2}: {ok}/{ok + bad} passed"
              + (f", {sum(t) / len(t):.1f} s per loop" if t else ""))
    return 0 if all(bad == 0 for _, bad in counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
