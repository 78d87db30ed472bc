"""Soak a motor record with a stock client: back-to-back moves, null moves, moves to
where the motor is, reversals, stops mid-move and scans; count hangs and callback errors.

Run one client kind per process (libca clients and ophyd signals for the same PV do not
mix well in one process)::

    python -m sdl.sim_devices.ioc.soak --client ophyd --pv SDL:STAGE:X --moves 500 --seed 0

Clients: ``ophyd`` (sdl's :class:`sdl.devices.motor.EpicsMotor`), ``ophyd-stock``
(:class:`ophyd.EpicsMotor` as shipped: it has a client-side race, see
:mod:`sdl.devices.motor`), ``ophyd-stock-patched`` (the same class after
:func:`sdl.devices.motor.close_stock_race`, as a user script would use it), ``pyepics`` (:class:`epics.Motor` and put-completion on
``.VAL``), ``ophyd-async`` (:class:`ophyd_async.epics.motor.Motor`, CA backend),
``ophyd-async-pva`` (the same over PVAccess; the IOC needs ``--pva-port`` and the
client the ``EPICS_PVA_*`` environment).
Prints one JSON line: ``{client, moves, ops, hangs, callback_errors, double_completions,
early_completions, errors, seconds}``. A hang (no operation finished within
``--hang-s``) ends the process after printing (exit code 3).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

#: Operations and their weights in a soak (a scan counts its points as moves).
OPS = {"move": 34, "null": 10, "same_target": 6, "reversal": 12, "retarget": 10, "stop": 10, "scan": 18}


@dataclass
class Tally:
    client: str
    moves: int = 0
    ops: dict = field(default_factory=dict)
    hangs: int = 0
    callback_errors: int = 0
    double_completions: int = 0
    early_completions: int = 0
    errors: list = field(default_factory=list)
    seconds: float = 0.0

    def error(self, kind: str, detail: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"{kind}: {detail}")


class _ErrorCounter(logging.Handler):
    """Counts ERROR records from the client libraries (ophyd logs callback exceptions)."""

    def __init__(self, tally: Tally):
        super().__init__(logging.ERROR)
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        self.tally.callback_errors += 1
        self.tally.error("log", record.getMessage()[:200])


class Watchdog:
    """Ends the process (after printing the tally) when no operation finishes in ``hang_s``."""

    def __init__(self, tally: Tally, hang_s: float, t0: float):
        self.tally, self.hang_s, self.t0 = tally, hang_s, t0
        self.last = time.monotonic()
        self.current = "start"
        threading.Thread(target=self._watch, daemon=True).start()

    def beat(self, op: str) -> None:
        self.last = time.monotonic()
        self.current = op

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            if time.monotonic() - self.last > self.hang_s:
                self.tally.hangs += 1
                self.tally.error("hang", f"no progress for {self.hang_s} s in {self.current!r}")
                self.tally.seconds = round(time.monotonic() - self.t0, 1)
                print(json.dumps(asdict(self.tally)), flush=True)
                os._exit(3)


class _Once:
    """A completion callback that counts its calls (a second call is a double completion)."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        self.event.set()


# ---------------------------------------------------------------------- clients
class OphydClient:
    #: ophyd fails a superseded MoveStatus, and a failed MoveStatus stops the motor from a
    #: status thread (MoveStatus._handle_failure -> pos.stop()), unordered with the next
    #: move: against a real record too the outcome depends on thread timing. Plans never
    #: supersede a move, so the soak does not retarget an ophyd EpicsMotor.
    retarget_reaches_target = False
    supports_retarget = False

    def __init__(self, pv: str, stock: bool, patched: bool = False):
        from ophyd import EpicsMotor as Stock

        from sdl.devices.motor import EpicsMotor, close_stock_race

        if patched:
            close_stock_race()
        cls = Stock if stock else EpicsMotor
        self.m = cls(pv, name="m")
        self.m.wait_for_connection(timeout=10)
        self.step = float(self.m.motor_step_size.get() or 1e-4) if hasattr(self.m, "motor_step_size") else 1e-4
        from bluesky import RunEngine

        self.RE = RunEngine({})

    def limits(self) -> tuple[float, float]:
        return tuple(self.m.limits)

    def set_velocity(self, v: float) -> None:
        self.m.velocity.set(v).wait(10)

    def position(self) -> float:
        return float(self.m.user_readback.get(use_monitor=False))

    def start(self, target: float) -> tuple[Any, _Once]:
        once = _Once()
        st = self.m.move(target, wait=False)
        st.add_callback(once)
        return st, once

    def wait(self, handle: tuple[Any, _Once], timeout: float) -> bool:
        st, once = handle
        if not once.event.wait(timeout):
            raise TimeoutError("move did not complete")
        time.sleep(0)  # let a double completion show
        return bool(st.success)

    def calls(self, handle: tuple[Any, _Once]) -> int:
        return handle[1].calls

    def stop(self) -> None:
        self.m.stop()

    def dmov(self) -> int:
        # what an ophyd user checks: EpicsMotor.moving, set from the DMOV monitor
        return int(not self.m.moving)

    def scan(self, a: float, b: float, n: int) -> int:
        import bluesky.plans as bp
        from ophyd.sim import det

        events = []
        self.RE(bp.scan([det], self.m, a, b, n), lambda name, doc: events.append(name) if name == "event" else None)
        return len(events)


class PyepicsClient:
    retarget_reaches_target = True
    supports_retarget = True

    def __init__(self, pv: str):
        import epics

        self.epics = epics
        self.m = epics.Motor(pv, timeout=10)
        self.val = self.m.PV("VAL")
        self.val.wait_for_connection(10)
        self.step = float(self.m.get("MRES") or 1e-4)

    def limits(self) -> tuple[float, float]:
        return float(self.m.get("LLM")), float(self.m.get("HLM"))

    def set_velocity(self, v: float) -> None:
        self.m.put("VELO", v, wait=True)

    def position(self) -> float:
        return float(self.m.PV("RBV").get(use_monitor=False))

    def start(self, target: float) -> _Once:
        once = _Once()
        self.val.put(target, use_complete=True, callback=once)
        return once

    def wait(self, once: _Once, timeout: float) -> bool:
        if not once.event.wait(timeout):
            raise TimeoutError("put completion did not arrive")
        time.sleep(0)
        return True

    def calls(self, once: _Once) -> int:
        return once.calls

    def stop(self) -> None:
        self.m.stop()

    def dmov(self) -> int:
        return int(self.m.PV("DMOV").get(use_monitor=False))

    def scan(self, a: float, b: float, n: int) -> int:
        done = 0
        for i in range(n):
            x = a + (b - a) * i / max(1, n - 1)
            code = self.m.move(x, wait=True, timeout=30)
            if code != 0:
                raise RuntimeError(f"pyepics Motor.move({x}) returned {code}, not 0 (done OK); "
                                   f"LVIO={self.m.get('LVIO')} HLS={self.m.get('HLS')} LLS={self.m.get('LLS')}")
            self.position()
            done += 1
        return done


class OphydAsyncClient:
    retarget_reaches_target = True
    supports_retarget = True

    def __init__(self, pv: str, protocol: str = "ca"):
        from bluesky import RunEngine
        from bluesky.run_engine import call_in_bluesky_event_loop
        from ophyd_async.core import init_devices

        from sdl.devices.async_devices import motor

        self.RE = RunEngine({})
        self.call = call_in_bluesky_event_loop
        with init_devices():
            m = motor(pv, protocol=protocol)
        self.m = m
        self.step = float(self.call(m.motor_resolution.get_value()) or 1e-4)

    def limits(self) -> tuple[float, float]:
        return (float(self.call(self.m.low_limit_travel.get_value())),
                float(self.call(self.m.high_limit_travel.get_value())))

    def set_velocity(self, v: float) -> None:
        async def go():
            await self.m.velocity.set(v)
        self.call(go())

    def position(self) -> float:
        return float(self.call(self.m.user_readback.get_value()))

    def start(self, target: float) -> tuple[Any, _Once]:
        once = _Once()

        async def go():
            st = self.m.set(target)
            st.add_callback(once)
            return st
        return self.call(go()), once

    def wait(self, handle: tuple[Any, _Once], timeout: float) -> bool:
        st, once = handle
        if not once.event.wait(timeout):
            raise TimeoutError("set did not complete")
        time.sleep(0)
        return bool(st.success)

    def calls(self, handle: tuple[Any, _Once]) -> int:
        return handle[1].calls

    def stop(self) -> None:
        async def go():
            await self.m.stop(success=False)
        self.call(go())

    def dmov(self) -> int:
        return int(self.call(self.m.motor_done_move.get_value()))

    def scan(self, a: float, b: float, n: int) -> int:
        import bluesky.plans as bp
        from ophyd.sim import det

        events = []
        self.RE(bp.scan([det], self.m, a, b, n), lambda name, doc: events.append(name) if name == "event" else None)
        return len(events)


def make_client(kind: str, pv: str):
    if kind == "ophyd":
        return OphydClient(pv, stock=False)
    if kind == "ophyd-stock":
        return OphydClient(pv, stock=True)
    if kind == "ophyd-stock-patched":
        return OphydClient(pv, stock=True, patched=True)
    if kind == "pyepics":
        return PyepicsClient(pv)
    if kind == "ophyd-async":
        return OphydAsyncClient(pv)
    if kind == "ophyd-async-pva":
        return OphydAsyncClient(pv, protocol="pva")
    raise SystemExit("--client: one of ophyd, ophyd-stock, ophyd-stock-patched, pyepics, ophyd-async, "
                     f"ophyd-async-pva (got {kind!r})")


# ---------------------------------------------------------------------- the soak
def soak(client: Any, tally: Tally, moves: int, seed: int, velocity: float, dog: Watchdog,
         timeout: float = 30.0) -> Tally:
    rng = random.Random(seed)
    lo, hi = client.limits()
    lo, hi = lo + 0.5, hi - 0.5
    client.set_velocity(velocity)
    tol = 1.5 * client.step
    names = [n for n in OPS if n != "retarget" or client.supports_retarget]
    weights = [OPS[n] for n in names]
    last_target = client.position()

    def wait_dmov() -> None:
        deadline = time.monotonic() + timeout
        while client.dmov() != 1:
            if time.monotonic() > deadline:
                raise TimeoutError("DMOV did not return to 1")
            time.sleep(0.005)

    def finish(handle: Any, target: float | None, op: str) -> None:
        ok = client.wait(handle, timeout)
        if client.calls(handle) != 1:
            tally.double_completions += 1
            tally.error("double", f"{op}: completion callback ran {client.calls(handle)} times")
        if target is not None:
            pos = client.position()
            if not ok or abs(pos - target) > tol:
                tally.early_completions += 1
                tally.error("early", f"{op} (after {prev[0]}): completed (success={ok}) at {pos} "
                                     f"before reaching {target}")

    prev = ["start"]
    while tally.moves < moves:
        op = rng.choices(names, weights)[0]
        dog.beat(op)
        tally.ops[op] = tally.ops.get(op, 0) + 1
        try:
            if op == "move":
                last_target = round(rng.uniform(lo, hi), 3)
                finish(client.start(last_target), last_target, op)
                tally.moves += 1
            elif op in ("null", "same_target"):
                target = client.position() if op == "null" else last_target
                finish(client.start(target), target, op)
                tally.moves += 1
            elif op == "reversal":
                # back-to-back moves in opposite directions: out to one side, straight back
                here = client.position()
                out = round(min(hi, here + rng.uniform(0.1, 3.0)) if rng.random() < 0.5
                            else max(lo, here - rng.uniform(0.1, 3.0)), 3)
                finish(client.start(out), out, op)
                last_target = here
                finish(client.start(here), here, op)
                tally.moves += 2
            elif op == "retarget":
                # a new target while the motor is moving (NTM), opposite or same direction
                here = client.position()
                far = hi if here < (lo + hi) / 2 else lo
                first = client.start(far)
                time.sleep(rng.uniform(0.0, 0.03))
                last_target = round(rng.uniform(lo, hi), 3)
                second = client.start(last_target)
                client.wait(first, timeout)  # superseded: completes exactly once
                if client.calls(first) != 1:
                    tally.double_completions += 1
                    tally.error("double", f"retarget: first completion ran {client.calls(first)} times")
                finish(second, last_target if client.retarget_reaches_target else None, op)
                if not client.retarget_reaches_target:
                    wait_dmov()
                    last_target = client.position()
                tally.moves += 2
            elif op == "stop":
                here = client.position()
                far = hi if here < (lo + hi) / 2 else lo
                handle = client.start(far)
                time.sleep(rng.uniform(0.005, 0.04))
                client.stop()
                client.wait(handle, timeout)
                if client.calls(handle) != 1:
                    tally.double_completions += 1
                    tally.error("double", f"stop: completion ran {client.calls(handle)} times")
                wait_dmov()  # a real client waits for DMOV before the next move, too
                last_target = client.position()
                tally.moves += 1
            elif op == "scan":
                a, b = sorted(round(rng.uniform(lo, hi), 3) for _ in range(2))
                if rng.random() < 0.5:
                    a, b = b, a
                n = rng.randint(3, 8)
                got = client.scan(a, b, n)
                if got != n:
                    tally.error("scan", f"{got} events of {n}")
                last_target = b
                tally.moves += n
        except TimeoutError as exc:
            tally.hangs += 1
            tally.error("hang", f"{op}: {exc}")
            try:
                client.stop()
                wait_dmov()
            except Exception:  # noqa: BLE001
                pass
        except Exception as exc:  # noqa: BLE001 - reported, the soak goes on
            tally.error("exception", f"{op}: {type(exc).__name__}: {exc}"[:200])
        prev[0] = op
    return tally


# ---------------------------------------------------------------------- command records
def command_soak(kind: str, prefix: str, tally: Tally, commands: int, seed: int, dog: Watchdog,
                 timeout: float = 30.0) -> Tally:
    """Back-to-back ``DET:ACQUIRE`` commands (put-completion + BUSY handshake), and for the
    device classes a second command at once after the first (refused as busy or run after
    it; each completes once, the first unharmed).
    After each completion BUSY must already read 0 and ERR_CODE 0 (the IOC's contract)."""
    import epics

    rng = random.Random(seed)
    busy = epics.PV(prefix + "DET:BUSY", auto_monitor=False)
    err = epics.PV(prefix + "DET:ERR_CODE", auto_monitor=False)
    busy.wait_for_connection(10)
    err.wait_for_connection(10)

    if kind == "ophyd":
        from sdl.devices import Detector

        det = Detector(prefix + "DET:", name="detector")
        det.wait_for_connection(timeout=10)
        det.exposure_time.set(0.01).wait(10)

        def start() -> Any:
            once = _Once()
            st = det.trigger()
            st.add_callback(once)
            return st, once

        def result(handle: Any) -> bool:
            return bool(handle[0].success)
    elif kind == "ophyd-async":
        from sdl.devices.async_devices import AsyncDetector, connect_async, in_bluesky_loop

        det = AsyncDetector(prefix + "DET:", name="detector")
        connect_async(det)

        async def expose() -> None:
            await det.exposure_time.set(0.01)
        in_bluesky_loop(expose())

        def start() -> Any:
            once = _Once()

            async def go() -> Any:
                st = det.trigger()
                st.add_callback(once)
                return st
            return in_bluesky_loop(go()), once

        def result(handle: Any) -> bool:
            return bool(handle[0].success)
    elif kind == "pyepics":
        acquire = epics.PV(prefix + "DET:ACQUIRE")
        acquire.wait_for_connection(10)
        epics.caput(prefix + "DET:EXPOSURE", 0.01, wait=True)

        def start() -> Any:
            once = _Once()
            acquire.put(1, use_complete=True, callback=once)
            return None, once

        def result(handle: Any) -> bool:
            return True
    else:
        raise SystemExit(f"--client: one of ophyd, pyepics, ophyd-async (got {kind!r})")

    while tally.moves < commands:
        op = "overlap" if kind != "pyepics" and rng.random() < 0.2 else "acquire"
        dog.beat(op)
        tally.ops[op] = tally.ops.get(op, 0) + 1
        try:
            first = start()
            if op == "overlap":
                second = start()
                if not second[1].event.wait(timeout):
                    raise TimeoutError("the second command never completed")
                # refused as busy, or (the put queued behind the first on the circuit, as EPICS
                # base queues a put-callback on a busy record) run after it: both are fine
                outcome = "overlap_ran_after" if result(second) else "overlap_refused"
                tally.ops[outcome] = tally.ops.get(outcome, 0) + 1
                if second[1].calls != 1:
                    tally.double_completions += 1
                    tally.error("double", f"{op}: second completion ran {second[1].calls} times")
            if not first[1].event.wait(timeout):
                raise TimeoutError("command did not complete")
            time.sleep(0)
            if first[1].calls != 1:
                tally.double_completions += 1
                tally.error("double", f"{op}: completion ran {first[1].calls} times")
            if not result(first):
                tally.error("failed", f"{op}: the command failed: {getattr(first[0], 'exception', lambda: '')()}")
            if busy.get(use_monitor=False) != 0 or err.get(use_monitor=False) != 0:
                tally.early_completions += 1
                tally.error("early", f"{op}: completed with BUSY={busy.get()} ERR_CODE={err.get()}")
            tally.moves += 1
        except TimeoutError as exc:
            tally.hangs += 1
            tally.error("hang", f"{op}: {exc}")
        except Exception as exc:  # noqa: BLE001
            tally.error("exception", f"{op}: {type(exc).__name__}: {exc}"[:200])
    return tally


#: the stock clients the soak drives (``ophyd`` is sdl's race-free EpicsMotor)
CLIENTS = ("ophyd", "pyepics", "ophyd-async")


def run_soak(clients: tuple[str, ...] = CLIENTS, *, runs: int = 1, moves: int = 500, seed: int = 0,
             pv: str, env: dict[str, str] | None = None, hang_s: float = 30.0,
             velocity: float = 100.0, record: str = "motor") -> list[dict]:
    """Run the soak ``runs`` times per client, each run in its own process; one tally each.

    ``pv`` is the motor record of an IOC already serving (e.g. ``start_ioc(mode='process')``),
    or with ``record='detector'`` the lab prefix (the detector's ACQUIRE command is soaked);
    ``env`` the Channel Access environment of the client processes.
    """
    import subprocess

    results = []
    for run in range(runs):
        for client in clients:
            cmd = [sys.executable, "-m", "sdl.sim_devices.ioc.soak", "--client", client, "--pv", pv,
                   "--moves", str(moves), "--seed", str(seed + run), "--hang-s", str(hang_s),
                   "--velocity", str(velocity), "--record", record]
            try:
                proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                                      timeout=hang_s + 60 + moves * 2.0)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                tally = json.loads(lines[-1]) if lines else {
                    "client": client, "hangs": 0, "callback_errors": 0, "double_completions": 0,
                    "early_completions": 0, "errors": [f"no result (exit {proc.returncode}): "
                                                       f"{proc.stderr[-500:]}"]}
            except subprocess.TimeoutExpired:
                tally = {"client": client, "hangs": 1, "callback_errors": 0, "double_completions": 0,
                         "early_completions": 0, "errors": ["the client process did not end"]}
            tally["run"] = run
            results.append(tally)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client", required=True)
    ap.add_argument("--pv", required=True, help="motor record, e.g. SDL:STAGE:X")
    ap.add_argument("--moves", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--velocity", type=float, default=100.0, help="VELO for the soak (EGU/s)")
    ap.add_argument("--hang-s", type=float, default=30.0, help="no progress for this long = a hang")
    ap.add_argument("--record", choices=("motor", "detector"), default="motor",
                    help="motor: --pv is the motor record; detector: --pv is the lab prefix (DET:ACQUIRE)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    tally = Tally(client=args.client)
    logging.getLogger("ophyd").addHandler(_ErrorCounter(tally))
    logging.getLogger("ophyd_async").addHandler(_ErrorCounter(tally))
    logging.getLogger("bluesky").addHandler(_ErrorCounter(tally))

    def hook(exc_args: Any) -> None:
        tally.callback_errors += 1
        tally.error("thread", repr(exc_args.exc_value)[:200])

    threading.excepthook = hook
    dog = Watchdog(tally, args.hang_s, t0)
    if args.record == "detector":
        command_soak(args.client, args.pv, tally, args.moves, args.seed, dog)
    else:
        client = make_client(args.client, args.pv)
        dog.beat("connected")
        soak(client, tally, args.moves, args.seed, args.velocity, dog)
    tally.seconds = round(time.monotonic() - t0, 1)
    print(json.dumps(asdict(tally)), flush=True)
    sys.stdout.flush()
    os._exit(0 if not (tally.hangs or tally.callback_errors or tally.double_completions
                       or tally.early_completions or tally.errors) else 1)


if __name__ == "__main__":
    sys.exit(main())
