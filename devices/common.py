"""Building blocks of the EPICS device classes: command PVs with put-completion whose
Status reports the device's outcome, and connection checks that name the PVs.

A *command* (``ROBOT:MAKE``, ``CHANGER:LOAD``, ``DET:ACQUIRE`` ...) is written with
put-completion. When the put completes (and ``BUSY`` reads 0) the device's
``ERR_CODE``/``STATE`` say how it ended: the Status finishes, or fails with
:class:`sdl.errors.DeviceFault` ``(device name, ERR_MSG)``, which is what the
in-process doubles raise, so plans and campaigns see the same error either way.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import math
import numbers
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import DeviceStatus

from sdl.errors import DeviceFault

#: Seconds a command may take before its Status fails (a lost IOC must not hang a run forever).
DEFAULT_COMMAND_TIMEOUT = 3600.0
#: Seconds to wait for PVs to connect.
DEFAULT_CONNECTION_TIMEOUT = 5.0


def finish_status(status: DeviceStatus, exc: BaseException | None = None) -> None:
    """Finish ``status`` (once; a later attempt, e.g. a watchdog, is ignored)."""
    if status.done:
        return
    try:
        if exc is None:
            status.set_finished()
        else:
            status.set_exception(exc)
    except Exception:  # noqa: BLE001 - already finished by a racing thread
        pass


class CommandSignal(EpicsSignal):
    """A command PV: ``set(value)`` writes it with put-completion and returns a Status
    that finishes when the device is done, or fails with ``DeviceFault(device, ERR_MSG)``.

    The parent device must have ``busy``, ``error_code``, ``error_message`` and
    ``state`` components (:class:`CommandDevice`), monitored.

    How a command concludes (``docs/epics.md``, "Speed"): sdl's IOCs post ``BUSY`` 0 and
    the results of a command (``ERR_CODE``, ``STATE``, ``SPECTRUM`` ...) before the put
    completes, and send the put-completion reply after those monitors
    (:mod:`sdl.sim_devices.ioc.ca_context`). The completion callback runs on ophyd's
    monitor thread, behind the monitor callbacks that arrived before it, so when a
    ``BUSY`` 0 has arrived since the put the monitored values are the command's
    outcome: no get, no thread hop. Otherwise (a server that completes the put early or
    replies before its monitors) it falls back to reading BUSY/ERR_CODE/STATE fresh
    until BUSY reads 0, on a worker thread.
    """

    def __init__(self, read_pv: str, *, command_timeout: float | None = None, **kwargs: Any):
        kwargs.setdefault("put_complete", True)
        super().__init__(read_pv, **kwargs)
        self.command_timeout = command_timeout
        #: how commands concluded: from monitors (no get) or by reading fresh (fallback)
        self.concluded_from_monitors = 0
        self.concluded_by_reading = 0

    def set(self, value: Any, *, timeout: float | None = None, settle_time: float | None = None) -> DeviceStatus:
        device = self.parent
        status = DeviceStatus(device)
        if timeout is None:
            timeout = self.command_timeout or getattr(device, "command_timeout", DEFAULT_COMMAND_TIMEOUT)
        try:
            # BUSY is monitored: 0 there is enough (the IOC refuses a command while busy
            # anyway); a 1 may be stale, so it is confirmed with a get before refusing.
            if int(device.busy.get()) and int(device.busy.get(use_monitor=False)):
                finish_status(status, DeviceFault(device.name, "busy: the previous command has not finished"))
                return status
        except Exception as exc:  # noqa: BLE001 - a disconnected IOC
            finish_status(status, connection_fault(device.name, exc))
            return status

        if timeout and math.isfinite(timeout):
            handle = _watchdog().after(timeout, lambda: finish_status(status, DeviceFault(
                device.name, f"{self.pvname}: no completion within {timeout:g} s (IOC lost or device hung)")))
            status.add_callback(lambda st: handle.cancel())

        idles_before = _busy_idles(device)

        def put_done(**kwargs: Any) -> None:
            self._conclude_from_monitors(status, idles_before)

        try:
            put_completing_on_monitor_thread(self, value, put_done)
        except Exception as exc:  # noqa: BLE001 - refused or disconnected
            finish_status(status, connection_fault(device.name, exc))
        return status

    def _conclude_from_monitors(self, status: DeviceStatus, idles_before: int) -> None:
        """On the monitor thread: conclude from monitored PVs if a BUSY 0 arrived since the put."""
        device = self.parent
        try:
            if _busy_idles(device) > idles_before and not int(device.busy.get()):
                self.concluded_from_monitors += 1
                self._finish(status, device.error_code.get(), device.state.get(), device.error_message.get())
                return
        except Exception as exc:  # noqa: BLE001
            finish_status(status, connection_fault(device.name, exc))
            return
        # Not in the monitor thread: it must not block the other monitors.
        _conclusions().submit(self._conclude, status)

    def _conclude(self, status: DeviceStatus) -> None:
        device = self.parent
        self.concluded_by_reading += 1
        try:
            # Hardware that completes the put early keeps BUSY at 1 until the action is
            # over. BUSY, ERR_CODE and STATE are read fresh, in one round trip.
            busy, code, state = fresh_values([device.busy, device.error_code, device.state])
            while int(busy):
                if status.done:  # the watchdog gave up
                    return
                time.sleep(0.02)
                busy, code, state = fresh_values([device.busy, device.error_code, device.state])
            message = device.error_message.get(use_monitor=False) if int(code) or str(state) == "error" else ""
            self._finish(status, code, state, message)
        except Exception as exc:  # noqa: BLE001
            finish_status(status, connection_fault(device.name, exc))

    def _finish(self, status: DeviceStatus, code: Any, state: Any, message: Any) -> None:
        code, state = int(code), str(state)
        if code or state == "error":
            message = str(message).strip()
            finish_status(status, DeviceFault(self.parent.name, message or f"{self.attr_name} failed (state {state})"))
        else:
            finish_status(status)


class CommandDevice(Device):
    """A device that runs commands: STATE, BUSY, ERR_CODE, ERR_MSG (names as the sim doubles),
    all monitored (a command concludes from them: :class:`CommandSignal`)."""

    state = Cpt(EpicsSignalRO, "STATE", string=True, kind="config", auto_monitor=True)
    error_message = Cpt(EpicsSignalRO, "ERR_MSG", string=True, kind="config", auto_monitor=True)
    busy = Cpt(EpicsSignalRO, "BUSY", kind="omitted", auto_monitor=True)
    error_code = Cpt(EpicsSignalRO, "ERR_CODE", kind="omitted", auto_monitor=True)

    #: seconds a command may take before its Status fails
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: BUSY monitor updates reading 0 (counted on the monitor thread)
        self._busy_idles = 0
        self.busy.subscribe(self._count_busy, run=False)

    def _count_busy(self, value: Any = None, **kwargs: Any) -> None:
        with contextlib.suppress(TypeError, ValueError):
            if not int(value):
                self._busy_idles += 1


def _busy_idles(device: Any) -> int:
    return int(getattr(device, "_busy_idles", 0))


def put_completing_on_monitor_thread(signal: Any, value: Any, callback: Any) -> None:
    """Write ``value`` with put-completion, flushed where :func:`put_flushed` can (else through
    ophyd), and run ``callback()`` at the reply on ophyd's monitor thread, behind the monitor
    updates that arrived before it: how sdl's commands and shutter conclude from monitors."""
    wrapped = _on_monitor_thread(callback)
    if not put_flushed(signal, value, wrapped):
        signal.put(value, use_complete=True, callback=wrapped)


def _on_monitor_thread(callback: Any) -> Any:
    """``callback`` wrapped to run on ophyd's monitor dispatcher thread (pyepics control layer),
    after the monitor callbacks that arrived before it; unchanged without a dispatcher."""
    try:
        from ophyd import cl
        from ophyd._dispatch import wrap_callback

        dispatcher = cl.get_dispatcher() if hasattr(cl, "get_dispatcher") else None
        if dispatcher is None or "monitor" not in dispatcher.threads:
            return callback
        return wrap_callback(dispatcher, "monitor", callback)
    except Exception:  # noqa: BLE001 - another control layer
        return callback


class _Handle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Watchdog:
    """One daemon thread running deadlines (a ``threading.Timer`` per command cost a thread
    start, ~0.2 ms, on every command)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Handle, Any]] = []
        self._cond = threading.Condition()
        self._seq = 0
        threading.Thread(target=self._run, name="sdl-command-watchdog", daemon=True).start()

    def after(self, seconds: float, fn: Any) -> _Handle:
        handle = _Handle()
        with self._cond:
            self._seq += 1
            entry = (time.monotonic() + seconds, self._seq, handle, fn)
            earliest = not self._heap or entry[0] < self._heap[0][0]
            heapq.heappush(self._heap, entry)
            if earliest:  # else the thread's current wait ends before this deadline anyway
                self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                _, _, handle, fn = heapq.heappop(self._heap)
            if not handle.cancelled:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - a failing watchdog action must not stop the others
                    pass


_WATCHDOG: _Watchdog | None = None
_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _watchdog() -> _Watchdog:
    global _WATCHDOG
    with _EXECUTOR_LOCK:
        if _WATCHDOG is None:
            _WATCHDOG = _Watchdog()
        return _WATCHDOG


def _conclusions() -> ThreadPoolExecutor:
    """Worker threads that conclude commands by polling (one thread per command cost ~0.2 ms each)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sdl-command",
                                           initializer=_ca_thread)
        return _EXECUTOR


def _ca_thread() -> None:
    import epics.ca

    epics.ca.use_initial_context()


def fresh_values(signals: list[Any], timeout: float = 5.0) -> list[Any]:
    """Read several EPICS signals fresh (not from monitors) in one round trip: every CA get
    is sent, then one flush, then the answers (``string=True`` signals as strings)."""
    import epics.ca as ca

    pvs = [sig._read_pv for sig in signals]
    if not all(getattr(pv, "chid", None) is not None and pv.connected for pv in pvs):
        return [sig.get(use_monitor=False) for sig in signals]  # raises the usual disconnection error
    ftypes = [ca.dbr.STRING if getattr(sig, "as_string", False) else None for sig in signals]
    for pv, ftype in zip(pvs, ftypes):
        ca.get(pv.chid, ftype=ftype, wait=False)
    ca.poll()
    values = []
    for sig, pv, ftype in zip(signals, pvs, ftypes):
        value = ca.get_complete(pv.chid, ftype=ftype, timeout=timeout)
        if value is None:
            raise TimeoutError(f"{pv.pvname}: no answer to a get within {timeout:g} s")
        values.append(value)
    return values


def put_flushed(signal: Any, value: Any, callback: Any = None) -> bool:
    """Write a scalar number to an EPICS signal's PV (with put-completion when ``callback``)
    and flush, without pyepics' ``ca_pend_event`` sleep: True if done, False if not
    applicable (not pyepics, not connected, not a scalar numeric PV: use ``signal.put``).

    pyepics' ``ca.put`` ends with ``poll()``, which in preemptive-callback mode sleeps
    the pend_event timeout (10 us for a put, 100 us with a callback): a thread sleep
    on every move and every command, which on a busy machine waits for the CPU again.
    The write itself is the one pyepics makes (``ca_array_put[_callback]``, pyepics'
    put-completion handler); ``ca_flush_io`` sends it. ``callback()`` runs in the CA
    thread, with no arguments. ophyd's setpoint bookkeeping of ``EpicsSignal.put`` is
    not done (the monitors bring the readback).
    """
    pv = getattr(signal, "_write_pv", None)
    chid = getattr(pv, "chid", None)
    if chid is None or not getattr(pv, "connected", False) or getattr(pv, "context", None) is None:
        return False
    if isinstance(value, (str, bytes)) or not isinstance(value, numbers.Real):
        return False
    import ctypes

    import epics.ca as ca
    from epics import dbr

    current = ca.current_context()
    if current is None:
        ca.attach_context(pv.context)  # this thread now uses the PVs' context (pyepics' initial one)
    elif current != pv.context:
        return False  # a thread of another context: let pyepics switch contexts
    ftype = ca.field_type(chid)
    if ca.element_count(chid) != 1 or ftype in (dbr.STRING, dbr.CHAR) or ftype not in dbr.Map:
        return False
    data = (1 * dbr.Map[ftype])()
    try:
        data[0] = value
    except TypeError:
        data[0] = type(data[0])(value)
    if callback is None:
        ret = ca.libca.ca_array_put(ftype, 1, chid, data)
    else:
        completes = ca._put_completes  # pyepics keeps the handler alive until it has run

        def put_completed() -> None:
            with contextlib.suppress(ValueError):
                completes.remove(put_completed)
            callback()

        completes.append(put_completed)
        ret = ca.libca.ca_array_put_callback(ftype, 1, chid, data, ca._CB_PUTWAIT, ctypes.py_object(put_completed))
    ca.PySEVCHK("put", ret)
    ca.flush_io()
    return True


class ArraySignalRO(EpicsSignalRO):
    """A monitored waveform (a detector's spectrum) without pyepics' repr() on every update.

    pyepics 3.5 (``PV._set_charval``, run for each monitor update in the CA thread)
    computes ``repr(value)`` first and only then, seeing an array, stores
    ``'<array size=N, type=T>'`` as the ``char_value``: for 601 doubles the discarded
    repr cost ~1-2 ms of CPU per update, on the way to the put-completion behind it.
    Here the PV stores that same string without the repr; scalars, strings and char
    waveforms go through pyepics unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("auto_monitor", True)
        super().__init__(*args, **kwargs)
        pv = getattr(self, "_read_pv", None)
        original = getattr(type(pv), "_set_charval", None)
        if pv is not None and original is not None and hasattr(pv, "_args"):
            pv._set_charval = functools.partial(_array_charval, pv, original)


def _array_charval(pv: Any, original: Any, val: Any, call_ca: bool = True, force_long_string: bool = False) -> Any:
    from epics import dbr

    ftype = pv._args.get("ftype")
    if (force_long_string or val is None or ftype is None or not (pv.count or 0) > 1
            or dbr.native_type(ftype) in (dbr.STRING, dbr.CHAR)):
        return original(pv, val, call_ca=call_ca, force_long_string=force_long_string)
    try:
        length = len(val)
    except TypeError:
        length = 1
    cval = f"<array size={length}, type={dbr.Name(ftype).lower()}>"
    pv._args["char_value"] = cval
    return cval


def connection_fault(device: str, exc: BaseException) -> DeviceFault:
    if isinstance(exc, DeviceFault):
        return exc
    return DeviceFault(device, f"channel access error: {exc}")


def unconnected_pvs(devices: Iterable[Any]) -> list[str]:
    """PV names of the EPICS signals among ``devices`` that are not connected."""
    missing: list[str] = []
    for dev in devices:
        signals = [dev] if not hasattr(dev, "walk_signals") else [w.item for w in dev.walk_signals()]
        for sig in signals:
            pvs = [getattr(sig, "_read_pv", None), getattr(sig, "_write_pv", None)]
            for pv in pvs:
                if pv is not None and not pv.connected and pv.pvname not in missing:
                    missing.append(pv.pvname)
    return missing


def wait_for_connection(devices: Iterable[Any], timeout: float = DEFAULT_CONNECTION_TIMEOUT) -> None:
    """Wait until every PV of ``devices`` is connected, or raise a DeviceFault naming the missing PVs."""
    devices = [d for d in devices if d is not None]
    deadline = time.monotonic() + timeout
    for dev in devices:
        try:
            dev.wait_for_connection(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - reported below with the PV names
            break
    missing = unconnected_pvs(devices)
    if missing:
        from os import environ

        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        names = sorted({str(getattr(d, "name", d)) for d in devices
                        if any(pv in missing for pv in unconnected_pvs([d]))})
        raise DeviceFault(
            ",".join(names) or "epics",
            f"PV {shown} did not connect within {timeout:g} s (is the IOC running? "
            f"EPICS_CA_ADDR_LIST={environ.get('EPICS_CA_ADDR_LIST', '')!r}, "
            f"EPICS_CA_SERVER_PORT={environ.get('EPICS_CA_SERVER_PORT', '5064')!r})",
        )
