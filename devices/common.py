"""Building blocks of the EPICS device classes: command PVs with put-completion whose
Status reports the device's outcome, and connection checks that name the PVs.

A *command* (``ROBOT:MAKE``, ``CHANGER:LOAD``, ``DET:ACQUIRE`` ...) is written with
put-completion. When the put completes (and ``BUSY`` reads 0) the device's
``ERR_CODE``/``STATE`` say how it ended: the Status finishes, or fails with
:class:`sdl.errors.DeviceFault` ``(device name, ERR_MSG)``, which is what the
in-process doubles raise, so plans and campaigns see the same error either way.
"""

from __future__ import annotations

import math
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
    ``state`` components (:class:`CommandDevice`).
    """

    def __init__(self, read_pv: str, *, command_timeout: float | None = None, **kwargs: Any):
        kwargs.setdefault("put_complete", True)
        super().__init__(read_pv, **kwargs)
        self.command_timeout = command_timeout

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
            watchdog = threading.Timer(timeout, lambda: finish_status(status, DeviceFault(
                device.name, f"{self.pvname}: no completion within {timeout:g} s (IOC lost or device hung)")))
            watchdog.daemon = True
            watchdog.start()
            status.add_callback(lambda st: watchdog.cancel())

        def put_done(**kwargs: Any) -> None:
            # Not in the CA callback thread: reading PVs from there is not allowed.
            _conclusions().submit(self._conclude, status)

        try:
            self.put(value, use_complete=True, callback=put_done)
        except Exception as exc:  # noqa: BLE001 - refused or disconnected
            finish_status(status, connection_fault(device.name, exc))
        return status

    def _conclude(self, status: DeviceStatus) -> None:
        device = self.parent
        try:
            # With put-completion BUSY is already 0; hardware that completes the put early
            # keeps BUSY at 1 until the action is over. BUSY, ERR_CODE and STATE are read
            # fresh, in one round trip.
            busy, code, state = fresh_values([device.busy, device.error_code, device.state])
            while int(busy):
                if status.done:  # the watchdog gave up
                    return
                time.sleep(0.02)
                busy, code, state = fresh_values([device.busy, device.error_code, device.state])
            code, state = int(code), str(state)
            if code or state == "error":
                message = str(device.error_message.get(use_monitor=False)).strip()
                finish_status(status, DeviceFault(device.name, message or f"{self.attr_name} failed (state {state})"))
            else:
                finish_status(status)
        except Exception as exc:  # noqa: BLE001
            finish_status(status, connection_fault(device.name, exc))


class CommandDevice(Device):
    """A device that runs commands: STATE, BUSY, ERR_CODE, ERR_MSG (names as the sim doubles)."""

    state = Cpt(EpicsSignalRO, "STATE", string=True, kind="config")
    error_message = Cpt(EpicsSignalRO, "ERR_MSG", string=True, kind="config")
    busy = Cpt(EpicsSignalRO, "BUSY", kind="omitted", auto_monitor=True)
    error_code = Cpt(EpicsSignalRO, "ERR_CODE", kind="omitted")

    #: seconds a command may take before its Status fails
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _conclusions() -> ThreadPoolExecutor:
    """Worker threads that conclude commands (one thread per command cost ~0.2 ms each)."""
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
