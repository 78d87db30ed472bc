"""Serve a simulated lab over Channel Access: build the IOC, run it in a thread or a process.

Usage (a test, a demo, ``sdl ioc``)::

    from sdl.sim_devices.ioc import serve_sim_lab

    with serve_sim_lab("sim-xrd", seed=0, prefix="SDL:", port=5064) as ioc:
        devices = ioc.lab_devices()          # sdl.plans.LabDevices over CA
        ...                                  # ioc.lab is the SimLab behind the PVs (thread mode)

The IOC wraps a :class:`~sdl.sim_devices.lab.SimLab` (built by
:func:`sdl.instruments.make_instrument`, so the same seed gives the same lab as the
in-process instrument) and forwards every command to its in-process devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, Iterator

from caproto.server import PVGroup

from sdl.errors import InvalidInput
from sdl.sim_devices.ioc._util import Bridge
from sdl.sim_devices.ioc.groups import (
    PoolProbeIOC,
    RingIOC,
    SampleChangerIOC,
    ShutterIOC,
    SimControlIOC,
    TemperatureStageIOC,
    synthesis_robot_group,
    xrd_detector_group,
)
from sdl.sim_devices.ioc.motor import MotorAxisIOC

log = logging.getLogger(__name__)

#: The IOCs one can serve, in order, and the PV prefix of each (after the lab prefix).
IOC_PREFIXES: dict[str, str] = {
    "stage_x": "STAGE:X",
    "stage_y": "STAGE:Y",
    "mono_energy": "MONO:ENERGY",
    "shutter": "SHUTTER:",
    "ring": "RING:",
    "detector": "DET:",
    "changer": "CHANGER:",
    "robot": "ROBOT:",
    "temperature": "TEMP:",
    "sim": "SIM:",
}
IOC_NAMES: tuple[str, ...] = tuple(IOC_PREFIXES)
#: Group names that stand for several IOCs.
IOC_ALIASES: dict[str, tuple[str, ...]] = {
    "motors": ("stage_x", "stage_y", "mono_energy"),
    "beamline": ("stage_x", "stage_y", "mono_energy", "shutter", "ring", "detector", "temperature"),
    "robots": ("changer", "robot"),
}
DEFAULT_PREFIX = "SDL:"
DEFAULT_PORT = 5064
#: Mono energy axis (keV) the simulated lab lacks: served by the IOC over its own SimMotor.
MONO_LIMITS, MONO_INITIAL, MONO_VELOCITY = (5.0, 25.0), 8.048, 1.0


def resolve_names(names: Iterable[str] | str | None) -> list[str]:
    """IOC names (``None``/'all' = all), aliases expanded, in the canonical order."""
    if names is None or names == "all":
        return list(IOC_NAMES)
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    wanted: set[str] = set()
    for n in names:
        if n == "all":
            wanted.update(IOC_NAMES)
        elif n in IOC_ALIASES:
            wanted.update(IOC_ALIASES[n])
        elif n in IOC_PREFIXES:
            wanted.add(n)
        else:
            raise InvalidInput("names", f"unknown IOC; allowed: {sorted([*IOC_NAMES, *IOC_ALIASES, 'all'])}", n)
    return [n for n in IOC_NAMES if n in wanted]


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix) or len(prefix) > 24:
        raise InvalidInput("prefix", "a PV prefix: 1-24 characters, no spaces (e.g. 'SDL:')", prefix)
    return prefix


class SimLabIOC:
    """The PV database of the chosen IOCs over one SimLab (not yet served)."""

    def __init__(self, lab: Any, *, prefix: str = DEFAULT_PREFIX, names: Iterable[str] | str | None = None,
                 instrument_name: str = "sim-xrd", seed: int = 0, motor_tick_s: float = 0.02):
        from sdl.sim_devices.motor import SimMotor

        self.lab = lab
        self.prefix = check_prefix(prefix)
        self.names = resolve_names(names)
        self.bridge = Bridge()
        self.groups: dict[str, PVGroup] = {}
        #: the in-process motors behind the motor records (mono_energy is the IOC's own)
        self.motors: dict[str, Any] = {}
        #: the PVAccess mirror (:meth:`start_pva`), None when serving CA only
        self.pva: Any = None
        p = {n: self.prefix + IOC_PREFIXES[n] for n in self.names}
        common = {"bridge": self.bridge}
        for n in self.names:
            if n in ("stage_x", "stage_y", "mono_energy"):
                sim = getattr(lab, n, None)
                if sim is None and n == "mono_energy":
                    sim = SimMotor(name="mono_energy", clock=lab.clock, limits=MONO_LIMITS, egu="keV",
                                   velocity=MONO_VELOCITY, init_pos=MONO_INITIAL)
                self.motors[n] = sim
                self.groups[n] = MotorAxisIOC(prefix=p[n], sim_motor=sim, clock=lab.clock, tick_s=motor_tick_s,
                                              description=n)
            elif n == "shutter":
                self.groups[n] = ShutterIOC(prefix=p[n], lab=lab, **common)
            elif n == "ring":
                self.groups[n] = RingIOC(prefix=p[n], lab=lab, **common)
            elif n == "detector":
                cls = PoolProbeIOC if lab.is_pool else xrd_detector_group(len(lab.detector.two_theta.get()))
                self.groups[n] = cls(prefix=p[n], lab=lab, **common)
            elif n == "changer":
                self.groups[n] = SampleChangerIOC(prefix=p[n], lab=lab, **common)
            elif n == "robot":
                self.groups[n] = synthesis_robot_group(len(lab.precursors))(prefix=p[n], lab=lab, **common)
            elif n == "temperature":
                self.groups[n] = TemperatureStageIOC(prefix=p[n], clock=lab.clock)
            elif n == "sim":
                self.groups[n] = SimControlIOC(prefix=p[n], lab=lab, instrument_name=instrument_name, seed=seed,
                                               on_reset=self._on_fault_cleared)
        self.pvdb: dict[str, Any] = {}
        for group in self.groups.values():
            self.pvdb.update(group.pvdb)

    async def _on_fault_cleared(self, device: str) -> None:
        group = self.groups.get(device)
        if group is not None and hasattr(group, "clear_error"):
            await group.clear_error()

    async def startup(self, async_lib: Any = None) -> None:
        await self.bridge.start()

    def start_pva(self, host: str, pva_port: int) -> None:
        """Serve the same PVs over PVAccess (p4p), UDP search port ``pva_port`` (call in the loop)."""
        from sdl.sim_devices.ioc.pva import PvaServer, pva_channels

        self.pva = PvaServer(pva_channels(self.groups.values()), asyncio.get_running_loop(), host=host,
                             broadcast_port=pva_port)

    async def shutdown(self) -> None:
        if self.pva is not None:
            with contextlib.suppress(Exception):
                self.pva.stop()
            self.pva = None
        for group in self.groups.values():
            if isinstance(group, MotorAxisIOC):
                with contextlib.suppress(Exception):
                    await group.shutdown()
        self.bridge.close()

    def pv_names(self) -> list[str]:
        """The PVs served (a motor record once, by its name; caproto adds its fields
        to the database as clients use them)."""
        return [n for n in self.pvdb if "." not in n[len(self.prefix):]]


def _doc_of(prop: Any) -> str:
    spec = getattr(prop, "pvspec", None)
    return (getattr(spec, "doc", None) or "").strip()


def list_pvs(names: Iterable[str] | str | None = None, prefix: str = DEFAULT_PREFIX, *,
             instrument_name: str = "sim-xrd", seed: int = 0, motor_fields: bool = True,
             lab: Any = None) -> list[dict]:
    """The PVs the IOCs serve: ``[{name, ioc, type, count, access, units, doc}]``.

    Motor records are listed by their key fields (``.VAL .RBV .DMOV ...``) when
    ``motor_fields``; the record has every motor-record field.
    """
    if lab is None:
        from sdl.instruments import make_instrument

        lab = make_instrument(instrument_name, seed=seed).lab
    ioc = SimLabIOC(lab, prefix=prefix, names=names, instrument_name=instrument_name, seed=seed)
    rows: list[dict] = []
    for ioc_name, group in ioc.groups.items():
        for pvname, inst_ in group.pvdb.items():
            if isinstance(group, MotorAxisIOC):
                rows.append({"name": pvname, "ioc": ioc_name, "type": "motor", "count": 1, "access": "rw",
                             "units": inst_.field_inst.engineering_units.value or group.sim.egu,
                             "doc": f"motor record ({group.sim.egu}), limits {group.sim.limits}"})
                if motor_fields:
                    for field, doc in MOTOR_FIELDS_USED.items():
                        rows.append({"name": f"{pvname}.{field}", "ioc": ioc_name, "type": "motor field",
                                     "count": 1, "access": "ro" if field in MOTOR_RO_FIELDS else "rw",
                                     "units": "", "doc": doc})
                continue
            dtype = inst_.data_type.name.lower()
            count = getattr(inst_, "long_string_max_length", None) or inst_.max_length
            if type(inst_).__name__.startswith("LongString"):
                dtype = "char (string)"
            rows.append({
                "name": pvname, "ioc": ioc_name, "type": dtype, "count": int(count or 1),
                "access": "ro" if getattr(inst_.pvspec, "read_only", False) else "rw",
                "units": getattr(inst_, "units", "") or "", "doc": _doc_of(inst_),
            })
    ioc.bridge.close()
    return rows


MOTOR_FIELDS_USED: dict[str, str] = {
    "VAL": "setpoint; control limits = LLM/HLM",
    "RBV": "readback",
    "DMOV": "1 when done moving",
    "MOVN": "1 while moving",
    "HLM": "user high limit",
    "LLM": "user low limit",
    "VELO": "velocity (EGU/s)",
    "ACCL": "acceleration time (s)",
    "STOP": "write 1: stop",
    "SPMG": "Stop/Pause/Move/Go",
    "EGU": "engineering units",
    "DIR": "user direction", "OFF": "user offset", "SET": "set/use switch (SET not simulated)",
    "FOFF": "offset freeze switch", "HLS": "at high limit switch", "LLS": "at low limit switch",
    "TDIR": "direction of travel", "HOMF": "write 1: home forward", "HOMR": "write 1: home reverse",
    "LVIO": "limit violation", "MSTA": "motor status bits", "CNEN": "enable control",
}
MOTOR_RO_FIELDS = {"RBV", "DMOV", "MOVN", "HLS", "LLS", "TDIR", "LVIO", "MSTA"}


def pv_table_markdown(names: Iterable[str] | str | None = None, prefix: str = DEFAULT_PREFIX, *,
                      lab: Any = None) -> str:
    """The PV layout as a Markdown table (``docs/pv-layout.md`` is made from this)."""
    lines = ["| PV | IOC | type | n | access | units | meaning |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in list_pvs(names, prefix, lab=lab):
        lines.append(f"| `{r['name']}` | {r['ioc']} | {r['type']} | {r['count']} | {r['access']} | "
                     f"{r['units']} | {r['doc']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- serving
def loopback_environment(host: str = "127.0.0.1", port: int | None = None) -> dict[str, str]:
    """EPICS variables that keep a server (and its clients) on ``host`` and ``port``."""
    env = {
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": host,
        "EPICS_CAS_INTF_ADDR_LIST": host,
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": host,
    }
    if port is not None:
        env["EPICS_CA_SERVER_PORT"] = str(int(port))
    return env


@dataclasses.dataclass
class RunningIOC:
    """A running soft IOC (thread or subprocess); :meth:`stop` ends it."""

    prefix: str
    port: int
    host: str
    names: list[str]
    instrument_name: str
    seed: int
    time_scale: float
    mode: str
    #: UDP search port of the PVAccess server (None: CA only)
    pva_port: int | None = None
    #: the in-process lab and instrument behind the PVs (thread mode only)
    lab: Any = None
    instrument: Any = None
    ioc: SimLabIOC | None = None
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _task: Any = None
    _process: subprocess.Popen | None = None
    _error: BaseException | None = None

    @property
    def pvs(self) -> list[str]:
        if self.ioc is not None:
            return self.ioc.pv_names()
        return [r["name"] for r in list_pvs(self.names, self.prefix, instrument_name=self.instrument_name,
                                            motor_fields=False)]

    @property
    def running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def lab_devices(self, *, connect: bool = True, timeout: float = 5.0):
        """:class:`sdl.plans.LabDevices` over Channel Access to this IOC."""
        from sdl.epics_lab import epics_lab_devices

        return epics_lab_devices(self.prefix, connect=connect, timeout=timeout,
                                 detector="pool" if self.instrument_name.startswith("pool:") else "xrd")

    def write(self, pv: str, value: Any, timeout: float = 5.0) -> None:
        """Write a PV from the server side (thread mode), e.g. ``write('CHANGER:DOOR', 'open')``
        for what a real IOC would read from hardware. ``pv`` is the name after the prefix."""
        if self.ioc is None or self._loop is None:
            raise RuntimeError("server-side writes need an IOC in thread mode")
        name = pv if pv.startswith(self.prefix) else self.prefix + pv
        if name not in self.ioc.pvdb:
            raise InvalidInput("pv", "not served by this IOC", pv)
        prop = self.ioc.pvdb[name]
        asyncio.run_coroutine_threadsafe(prop.write(value, verify_value=False), self._loop).result(timeout)

    def sim_control(self, *, connect: bool = True, timeout: float = 5.0):
        """The ``SIM:`` fault-injection PVs as an ophyd device (:class:`SimControl`)."""
        from sdl.devices.common import wait_for_connection
        from sdl.sim_devices.ioc.client import SimControl

        sim = SimControl(self.prefix + IOC_PREFIXES["sim"], name="sim")
        if connect:
            wait_for_connection([sim], timeout)
        return sim

    def epics_instrument(self, *, connect: bool = True, timeout: float = 5.0):
        """An :class:`sdl.instruments.Instrument` whose devices talk to this IOC over CA.

        Space, objectives, reduction and truth are those of the served instrument (same
        name and seed), so ``CampaignRunner(..., instrument=ioc.epics_instrument())``
        runs a campaign through Channel Access.
        """
        from sdl.epics_lab import epics_instrument, epics_lab_devices

        if self.instrument is None:
            return epics_instrument(self.instrument_name, self.prefix, seed=self.seed, connect=connect,
                                    timeout=timeout)
        devices = epics_lab_devices(self.prefix, connect=connect, timeout=timeout,
                                    detector="pool" if self.lab is not None and self.lab.is_pool else "xrd")
        return dataclasses.replace(self.instrument, devices=devices, lab=None,
                                   options={**self.instrument.options, "epics_prefix": self.prefix})

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            proc = self._process
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            if proc.stdout is not None:
                proc.stdout.close()
            return
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"soft IOC {self.prefix} did not stop within {timeout} s")

    def __enter__(self) -> "RunningIOC":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _build(instrument_name: str, seed: int, time_scale: float, n_slots: int, options: dict | None):
    from sdl.instruments import make_instrument

    return make_instrument(instrument_name, seed=seed, time_scale=time_scale, n_slots=n_slots, options=options)


def start_ioc(
    instrument_name: str = "sim-xrd",
    *,
    seed: int = 0,
    prefix: str = DEFAULT_PREFIX,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    names: Iterable[str] | str | None = None,
    time_scale: float = 0.0,
    n_slots: int = 24,
    options: dict | None = None,
    mode: str = "thread",
    lab: Any = None,
    startup_timeout: float = 30.0,
    pva_port: int | None = None,
) -> RunningIOC:
    """Start the soft IOCs of a simulated instrument on ``host:port``; returns once they serve.

    ``mode='thread'`` runs the caproto server in a daemon thread of this process (its
    SimLab is ``.lab``; fast to start, shares the GIL); ``mode='process'`` runs
    ``python -m sdl.sim_devices.ioc`` in a subprocess. ``lab`` (thread mode) serves an
    existing SimLab instead of building one. ``pva_port``: serve the same PVs over
    PVAccess too, with that UDP search port (:mod:`sdl.sim_devices.ioc.pva`).
    """
    check_prefix(prefix)
    if mode not in ("thread", "process"):
        raise InvalidInput("mode", "allowed: 'thread', 'process'", mode)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidInput("port", "a UDP/TCP port number 1..65535", port)
    selected = resolve_names(names)
    if mode == "process":
        return _start_process(instrument_name, seed, prefix, port, host, selected, time_scale, n_slots, options,
                              startup_timeout, pva_port)
    instrument = None
    if lab is None:
        instrument = _build(instrument_name, seed, time_scale, n_slots, options)
        lab = instrument.lab
    ioc = SimLabIOC(lab, prefix=prefix, names=selected, instrument_name=instrument_name, seed=seed)
    handle = RunningIOC(prefix=prefix, port=port, host=host, names=selected, instrument_name=instrument_name,
                        seed=seed, time_scale=lab.time_scale, mode="thread", lab=lab, instrument=instrument, ioc=ioc,
                        pva_port=pva_port)
    for key, value in loopback_environment(host).items():
        if key.startswith("EPICS_CAS_"):
            os.environ.setdefault(key, value)
    quiet_caproto_logs()
    low_latency_caproto()
    ready = threading.Event()

    def main() -> None:
        loop = asyncio.new_event_loop()
        handle._loop = loop
        asyncio.set_event_loop(loop)

        async def serve() -> None:
            ctx = make_context(ioc.pvdb, [host], port)
            handle._task = asyncio.current_task()

            async def startup(async_lib: Any) -> None:
                await ioc.startup(async_lib)
                await _wait_motors_ready(ioc)
                if pva_port is not None:
                    ioc.start_pva(host, pva_port)
                ready.set()

            try:
                await ctx.run(startup_hook=startup)
            finally:
                await ioc.shutdown()
                _close_circuits(ctx)

        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the starter
            if not isinstance(exc, asyncio.CancelledError):
                handle._error = exc
        finally:
            ready.set()
            _cancel_all(loop)
            loop.close()

    thread = threading.Thread(target=main, name=f"sdl-ioc-{prefix}", daemon=True)
    handle._thread = thread
    thread.start()
    if not ready.wait(startup_timeout) or handle._error is not None or not thread.is_alive():
        handle.stop()
        raise RuntimeError(f"soft IOC {prefix} on {host}:{port} failed to start: {handle._error!r}")
    return handle


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the server left running (client circuits) before the loop closes."""
    with contextlib.suppress(Exception):
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())


class _QuietCaproto(logging.Filter):
    """Beacons to a loopback with no CA repeater fail every period, and batching under
    load is normal for a simulator: neither is worth a warning with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("Failed to send beacon") or msg.startswith("High load"))


#: caproto batches subscription updates for up to HIGH_LOAD_TIMEOUT after a burst and
#: doubles the allowed latency up to MAX_LATENCY (1 s) under load; a motor move is such a
#: burst, so DMOV reached clients 15-50 ms late. A simulator on loopback wants low latency.
LOW_LATENCY = {"CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC": ("HIGH_LOAD_TIMEOUT", 0.001),
               "CAPROTO_SERVER_MAX_LATENCY_SEC": ("MAX_LATENCY", 0.002)}


def make_context(pvdb: dict, interfaces: list[str], port: int):
    """A caproto asyncio server Context on ``interfaces`` and UDP ``port``: monitors sent at
    once, put-completion replies after the monitors posted before them, TCP_NODELAY on
    every circuit (:mod:`sdl.sim_devices.ioc.ca_context`)."""
    from sdl.sim_devices.ioc.ca_context import FastContext

    ctx = FastContext(pvdb, interfaces)
    ctx.ca_server_port = port
    return ctx


def _close_circuits(ctx: Any) -> None:
    """Close the clients' TCP connections: caproto leaves them open when its server stops,
    and a client would then send a later IOC on the same port down the dead circuit."""
    for circuit in list(getattr(ctx, "circuits", ())):
        with contextlib.suppress(Exception):
            circuit.client.writer.transport.abort()


def low_latency_caproto() -> None:
    """Tune caproto's server batching for low latency (unless set by environment variables)."""
    import caproto.server.common as common

    for env, (attr, value) in LOW_LATENCY.items():
        if env not in os.environ:
            setattr(common, attr, value)


def quiet_caproto_logs() -> None:
    for name in ("caproto.ctx", "caproto.circ"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietCaproto) for f in logger.filters):
            logger.addFilter(_QuietCaproto())


async def _wait_motors_ready(ioc: SimLabIOC, timeout: float = 10.0) -> None:
    """Motor startup hooks run as tasks; wait until each has published its limits."""
    t0 = time.monotonic()
    for group in ioc.groups.values():
        if isinstance(group, MotorAxisIOC):
            f = group.motor.field_inst
            while f.user_high_limit.value == f.user_low_limit.value and time.monotonic() - t0 < timeout:
                await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)


def _start_process(instrument_name, seed, prefix, port, host, names, time_scale, n_slots, options,
                   startup_timeout, pva_port=None) -> RunningIOC:
    import json

    cmd = [sys.executable, "-m", "sdl.sim_devices.ioc", "--instrument", instrument_name, "--seed", str(seed),
           "--prefix", prefix, "--port", str(port), "--host", host, "--names", ",".join(names),
           "--time-scale", repr(float(time_scale)), "--n-slots", str(n_slots)]
    if options:
        cmd += ["--options", json.dumps(options)]
    if pva_port is not None:
        cmd += ["--pva-port", str(int(pva_port))]
    env = {**os.environ, **loopback_environment(host, port)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, env=env, text=True)
    handle = RunningIOC(prefix=prefix, port=port, host=host, names=list(names), instrument_name=instrument_name,
                        seed=seed, time_scale=time_scale, mode="process", _process=proc, pva_port=pva_port)
    deadline = time.monotonic() + startup_timeout
    ready = threading.Event()

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                ready.set()
                break
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    ready.wait(max(0.0, deadline - time.monotonic()))
    if proc.poll() is not None or not ready.is_set():
        handle.stop()
        raise RuntimeError(f"soft IOC process {prefix} on {host}:{port} failed to start (exit {proc.returncode})")
    return handle


@contextlib.contextmanager
def serve_sim_lab(instrument_name: str = "sim-xrd", seed: int = 0, prefix: str = DEFAULT_PREFIX, *,
                  port: int = DEFAULT_PORT, host: str = "127.0.0.1", names: Iterable[str] | str | None = None,
                  time_scale: float = 0.0, n_slots: int = 24, options: dict | None = None, mode: str = "thread",
                  lab: Any = None, pva_port: int | None = None) -> Iterator[RunningIOC]:
    """Serve a simulated instrument's lab over CA (and PVA with ``pva_port``) for the ``with``
    block (see :func:`start_ioc`)."""
    handle = start_ioc(instrument_name, seed=seed, prefix=prefix, port=port, host=host, names=names,
                       time_scale=time_scale, n_slots=n_slots, options=options, mode=mode, lab=lab,
                       pva_port=pva_port)
    try:
        yield handle
    finally:
        handle.stop()


def run_ioc(names: Iterable[str] | str | None = None, prefix: str = DEFAULT_PREFIX, *,
            instrument_name: str = "sim-xrd", seed: int = 0, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
            time_scale: float = 0.0, n_slots: int = 24, options: dict | None = None,
            ready_message: bool = True, pva_port: int | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGINT / SIGTERM): the body of ``sdl ioc``."""
    check_prefix(prefix)
    selected = resolve_names(names)
    quiet_caproto_logs()
    low_latency_caproto()
    inst = _build(instrument_name, seed, time_scale, n_slots, options)
    ioc = SimLabIOC(inst.lab, prefix=prefix, names=selected, instrument_name=instrument_name, seed=seed)
    for key, value in loopback_environment(host).items():
        if key.startswith("EPICS_CAS_"):
            os.environ.setdefault(key, value)

    async def serve() -> None:
        ctx = make_context(ioc.pvdb, [host], port)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, task.cancel)

        async def startup(async_lib: Any) -> None:
            await ioc.startup(async_lib)
            await _wait_motors_ready(ioc)
            if pva_port is not None:
                ioc.start_pva(host, pva_port)
            if ready_message:
                print(f"READY {prefix} {host}:{ctx.port} udp {port} {len(ioc.pvdb)} PVs", flush=True)

        try:
            await ctx.run(startup_hook=startup)
        finally:
            await ioc.shutdown()
            _close_circuits(ctx)

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(serve())


__all__ = [
    "DEFAULT_PORT", "DEFAULT_PREFIX", "IOC_ALIASES", "IOC_NAMES", "IOC_PREFIXES", "RunningIOC", "SimLabIOC",
    "list_pvs", "loopback_environment", "pv_table_markdown", "resolve_names", "run_ioc", "serve_sim_lab",
    "start_ioc",
]
