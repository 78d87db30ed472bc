"""Channel Access vs in-process: what the EPICS transport costs.

1. A 1,000-point step scan (stage_x with the XRD detector, a 601-bin pattern per
   point) through the soft IOC over CA, and the same scan on the in-process doubles:
   events/s of each and their ratio.
2. The autonomous step (make, load, expose, unload) at time scale 0, so that all of
   its time is overhead outside instrument time: ms per step over CA and in-process.

The IOC runs in a subprocess (its own interpreter, as a real IOC would) unless
``--thread``. Numbers are from one run on this machine; compare ratios, not times.

    python benchmarks/epics_benchmark.py [--points 1000] [--steps 20] [--thread]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--thread", action="store_true", help="serve the IOC from a thread of this process")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()

    from sdl.testing import configure_loopback_ca, unique_prefix

    port = configure_loopback_ca()  # before ophyd starts libca

    from bluesky import RunEngine
    from bluesky.plans import scan

    from sdl.epics_lab import epics_lab_devices
    from sdl.instruments import make_instrument
    from sdl.plans import autonomous_step
    from sdl.sim_devices.ioc import serve_sim_lab

    seed = 0
    point = ([0.35, 0.4, 0.25], 430.0)
    local = make_instrument("sim-xrd", seed=seed)

    def run_scan(lab) -> float:
        RE = RunEngine({})
        n = 0

        def count(name, doc):
            nonlocal n
            n += name == "event"

        RE.subscribe(count)
        t0 = time.perf_counter()
        RE(scan([lab.detector], lab.stage_x, -5.0, 5.0, args.points))
        elapsed = time.perf_counter() - t0
        assert n == args.points, n
        return args.points / elapsed

    def run_steps(lab, tag: str) -> float:
        RE = RunEngine({})
        times = []
        for i in range(args.steps):
            t0 = time.perf_counter()
            RE(autonomous_step(lab, *point, slot=i % 24 + 1, sample_id=f"{tag}-{i}", exposure=1.0,
                               md={"reduction": local.reduction}))
            times.append(time.perf_counter() - t0)
        times.sort()
        return 1000.0 * times[len(times) // 2]  # median, ms

    mode = "thread" if args.thread else "process"
    t0 = time.perf_counter()
    with serve_sim_lab("sim-xrd", seed=seed, prefix=unique_prefix("B"), port=port, mode=mode) as ioc:
        startup = time.perf_counter() - t0
        lab_ca = epics_lab_devices(ioc.prefix)
        lab_ca.stage_x.velocity.set(1e4).wait(5)  # moves as instant as the in-process double's
        ca_rate = run_scan(lab_ca)
        ca_step = run_steps(lab_ca, "ca")
    local_rate = run_scan(local.devices)
    local_step = run_steps(local.devices, "local")

    results = {
        "ioc_mode": mode,
        "ioc_startup_s": round(startup, 2),
        "scan_points": args.points,
        "scan_events_per_s_ca": round(ca_rate, 1),
        "scan_events_per_s_in_process": round(local_rate, 1),
        "scan_slowdown_ca_vs_in_process": round(local_rate / ca_rate, 2),
        "steps": args.steps,
        "step_ms_ca": round(ca_step, 1),
        "step_ms_in_process": round(local_step, 1),
        "step_overhead_ms_ca_minus_in_process": round(ca_step - local_step, 1),
        "step_slowdown_ca_vs_in_process": round(ca_step / local_step, 2),
    }
    print(f"IOC in a {mode}, started in {startup:.1f} s")
    print(f"{args.points}-point scan: {ca_rate:8.1f} events/s over CA, {local_rate:8.1f} in-process "
          f"-> CA is {local_rate / ca_rate:.1f}x slower")
    print(f"autonomous step (time scale 0, median of {args.steps}): {ca_step:.1f} ms over CA, "
          f"{local_step:.1f} ms in-process -> {ca_step - local_step:.1f} ms of CA overhead per step "
          f"({ca_step / local_step:.1f}x)")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
