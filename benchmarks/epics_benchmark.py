"""Channel Access and PVAccess vs in-process: what the EPICS transport costs.

1. A 1,000-point step scan (stage_x with the XRD detector, a 601-bin pattern per
   point) through the soft IOC over CA (classic ophyd devices), over CA with ophyd-async
   devices (aioca), over PVA (ophyd-async devices, p4p), and the same scan on the
   in-process doubles: events/s of each and their ratios (CA / in-process is the
   issue's target, >= 0.8).
2. The autonomous step (make, load, expose, unload) at time scale 0, so that all of
   its time is overhead outside instrument time: ms per step over each transport and
   in-process, and the transport's overhead per step (target < 5 ms).

The IOC runs in a subprocess (its own interpreter, as a real IOC would) unless
``--thread``. The in-process scan runs right before and right after the CA scan and
their mean is the reference (load that changes during the run then biases neither
side). CPU per scan point (this process, all threads, and the IOC process) is printed
beside the rates: on a loaded machine the rates follow CPU time, not latency. Numbers
are from one run on this machine; compare ratios, not times.

    python benchmarks/epics_benchmark.py [--points 1000] [--steps 20] [--thread] [--no-pva]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--thread", action="store_true", help="serve the IOC from a thread of this process")
    ap.add_argument("--no-pva", action="store_true", help="skip the PVAccess (ophyd-async) runs")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()

    from sdl.testing import configure_loopback_ca, free_port, unique_prefix

    port = configure_loopback_ca()  # before ophyd starts libca
    pva_port = None if args.no_pva else free_port()
    if pva_port is not None:
        from sdl.sim_devices.ioc.pva import pva_client_environment

        os.environ.update(pva_client_environment("127.0.0.1", pva_port))

    from bluesky import RunEngine
    from bluesky.plans import scan

    from sdl.epics_lab import epics_lab_devices
    from sdl.instruments import make_instrument
    from sdl.plans import autonomous_step
    from sdl.sim_devices.ioc import serve_sim_lab

    seed = 0
    point = ([0.35, 0.4, 0.25], 430.0)
    local = make_instrument("sim-xrd", seed=seed, n_slots=max(24, args.steps))
    RE = RunEngine({})

    cpu: dict[str, tuple[float, float]] = {}  # scan -> (client, IOC) CPU ms per point

    def run_scan(lab, tag: str = "", ioc_pid: int | None = None) -> float:
        n = 0

        def count(name, doc):
            nonlocal n
            n += name == "event"

        c0, i0 = _cpu_self(), _cpu_of(ioc_pid)
        t0 = time.perf_counter()
        RE(scan([lab.detector], lab.stage_x, -5.0, 5.0, args.points), count)
        elapsed = time.perf_counter() - t0
        if tag:
            cpu[tag] = (1e3 * (_cpu_self() - c0) / args.points, 1e3 * (_cpu_of(ioc_pid) - i0) / args.points)
        assert n == args.points, n
        return args.points / elapsed

    def run_steps(lab, tag: str, first_slot: int = 1) -> float:
        times = []
        for i in range(args.steps):
            t0 = time.perf_counter()
            RE(autonomous_step(lab, *point, slot=first_slot + i, sample_id=f"{tag}-{i}", exposure=1.0,
                               md={"reduction": local.reduction}))
            times.append(time.perf_counter() - t0)
        times.sort()
        return 1000.0 * times[len(times) // 2]  # median, ms

    mode = "thread" if args.thread else "process"
    t0 = time.perf_counter()
    results: dict = {"ioc_mode": mode, "scan_points": args.points, "steps": args.steps}
    with serve_sim_lab("sim-xrd", seed=seed, prefix=unique_prefix("B"), port=port, mode=mode,
                       pva_port=pva_port, n_slots=max(24, 3 * args.steps)) as ioc:
        results["ioc_startup_s"] = round(time.perf_counter() - t0, 2)
        ioc_pid = ioc._process.pid if ioc._process is not None else None
        lab_ca = epics_lab_devices(ioc.prefix)
        lab_ca.stage_x.velocity.set(1e4).wait(5)  # moves as instant as the in-process double's
        for lab in (local.devices, lab_ca):  # warm-up: first use of the RunEngine and of each lab
            RE(scan([lab.detector], lab.stage_x, -5.0, 5.0, 20))
        local_before = run_scan(local.devices, "in-process")
        ca_rate = run_scan(lab_ca, "CA", ioc_pid)
        local_after = run_scan(local.devices)
        ca_step = run_steps(lab_ca, "ca")
        from sdl.devices.async_devices import async_lab_devices, in_bluesky_loop

        lab_aca = async_lab_devices(ioc.prefix, protocol="ca")

        async def fast_ca() -> None:
            await lab_aca.stage_x.velocity.set(1e4)

        in_bluesky_loop(fast_ca())
        aca_rate = run_scan(lab_aca)
        aca_step = run_steps(lab_aca, "aca", first_slot=2 * args.steps + 1)
        if pva_port is not None:
            lab_pva = async_lab_devices(ioc.prefix, protocol="pva")
            async def fast() -> None:
                await lab_pva.stage_x.velocity.set(1e4)

            in_bluesky_loop(fast())
            pva_rate = run_scan(lab_pva)
            pva_step = run_steps(lab_pva, "pva", first_slot=args.steps + 1)
    local_rate = (local_before + local_after) / 2
    local_step = run_steps(local.devices, "local")

    results.update({
        "scan_events_per_s_ca": round(ca_rate, 1),
        "scan_events_per_s_in_process": round(local_rate, 1),
        "scan_ratio_ca_over_in_process": round(ca_rate / local_rate, 2),
        "step_ms_ca": round(ca_step, 1),
        "step_ms_in_process": round(local_step, 1),
        "step_overhead_ms_ca": round(ca_step - local_step, 1),
        "scan_events_per_s_in_process_before_after": [round(local_before, 1), round(local_after, 1)],
        "cpu_ms_per_point": {k: {"client": round(c, 2), "ioc": round(i, 2)} for k, (c, i) in cpu.items()},
        "load_average": list(os.getloadavg()),
    })
    results.update({"scan_events_per_s_ca_ophyd_async": round(aca_rate, 1),
                    "scan_ratio_ca_ophyd_async_over_in_process": round(aca_rate / local_rate, 2),
                    "step_ms_ca_ophyd_async": round(aca_step, 1),
                    "step_overhead_ms_ca_ophyd_async": round(aca_step - local_step, 1)})
    print(f"IOC in a {mode}, started in {results['ioc_startup_s']:.1f} s")
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs")
    print(f"{args.points}-point scan: {ca_rate:8.1f} events/s over CA, {local_rate:8.1f} in-process "
          f"(mean of {local_before:.1f} before and {local_after:.1f} after) "
          f"-> CA/in-process = {ca_rate / local_rate:.2f} (target >= 0.8)")
    for tag, (c, i) in cpu.items():
        print(f"  CPU per point, {tag}: {c:.2f} ms in this process" + (f" + {i:.2f} ms in the IOC" if i else ""))
    print(f"{args.points}-point scan: {aca_rate:8.1f} events/s over CA with ophyd-async devices "
          f"-> {aca_rate / local_rate:.2f}")
    if pva_port is not None:
        results.update({"scan_events_per_s_pva": round(pva_rate, 1),
                        "scan_ratio_pva_over_in_process": round(pva_rate / local_rate, 2),
                        "step_ms_pva": round(pva_step, 1), "step_overhead_ms_pva": round(pva_step - local_step, 1)})
        print(f"{args.points}-point scan: {pva_rate:8.1f} events/s over PVA (ophyd-async) "
              f"-> PVA/in-process = {pva_rate / local_rate:.2f}")
    print(f"autonomous step (time scale 0, median of {args.steps}): {ca_step:.1f} ms over CA, "
          f"{local_step:.1f} ms in-process -> {ca_step - local_step:.1f} ms of CA overhead per step (target < 5)")
    print(f"autonomous step over CA with ophyd-async devices: {aca_step:.1f} ms -> "
          f"{aca_step - local_step:.1f} ms of overhead per step")
    if pva_port is not None:
        print(f"autonomous step over PVA (ophyd-async): {pva_step:.1f} ms -> {pva_step - local_step:.1f} ms "
              f"of PVA overhead per step")
    if args.json:
        print(json.dumps(results))


def _cpu_self() -> float:
    """CPU seconds of this process (all threads)."""
    t = os.times()
    return t.user + t.system


def _cpu_of(pid: int | None) -> float:
    """CPU seconds of process ``pid`` (Linux /proc; 0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


if __name__ == "__main__":
    main()
