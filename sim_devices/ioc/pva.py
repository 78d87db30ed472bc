"""Serve the soft IOC's PVs over PVAccess too (p4p), as an EPICS 7 IOC (QSRV) does.

One database, two protocols: every PV of the caproto database (and the motor-record
fields ophyd-async's ``Motor`` uses, as ``STAGE:X.DMOV`` ...) gets a p4p ``SharedPV``
that mirrors it. caproto stays the owner of the value:

- caproto -> PVA: each time caproto publishes a PV (any write, from a client of either
  protocol or from the simulation) the new value is posted to the PVA PV;
- PVA -> caproto: a PVA put is a caproto write (the same putter, the same checks), and
  the PVA put completes when that write has completed: a put to ``ACQUIRE`` or
  ``STAGE:X.VAL`` completes when the action is over, as with CA put-completion. A refused
  write fails the PVA put with caproto's message.

Types: double/integer scalars and arrays -> NTScalar, enum -> NTEnum, string and long
string (CHAR waveform) -> NTScalar string.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable

import numpy as np
from caproto import ChannelType

log = logging.getLogger(__name__)

#: motor-record fields served over PVA (those ophyd-async's Motor and ophyd's EpicsMotor use)
MOTOR_FIELDS = ("VAL", "RBV", "DMOV", "MOVN", "STOP", "SPMG", "VELO", "ACCL", "EGU", "MRES", "SREV", "UREV", "ERES",
                "OFF", "VMAX", "PREC", "RDBD", "LLM", "HLM", "DLLM", "DHLM", "FOFF", "HLS", "LLS", "OUT", "SET",
                "DIR", "TDIR", "MSTA", "LVIO", "DRBV", "RRBV", "DVAL", "RVAL", "HOMF", "HOMR", "CNEN", "RCNT",
                "MISS", "RTRY", "DESC")


def _is_long_string(chan: Any) -> bool:
    return type(chan).__name__.startswith("LongString")


def _nt_for(chan: Any):
    """The normative type (p4p ``NTScalar``/``NTEnum``) and a converter caproto -> PVA value."""
    from p4p.nt import NTEnum, NTScalar

    dtype = chan.data_type
    count = int(getattr(chan, "max_length", 1) or 1)
    if _is_long_string(chan) or dtype in (ChannelType.STRING,):
        return NTScalar("s"), lambda v: "" if v is None else str(v)
    if dtype == ChannelType.CHAR:
        return NTScalar("s"), lambda v: v if isinstance(v, str) else bytes(np.asarray(v, dtype=np.uint8)).split(
            b"\0", 1)[0].decode(errors="replace")
    if dtype == ChannelType.ENUM:
        choices = list(getattr(chan, "enum_strings", None) or [])

        def enum(v: Any) -> dict:
            index = choices.index(v) if isinstance(v, str) and v in choices else int(v or 0)
            return {"index": index, "choices": choices}
        return NTEnum(), enum
    code = "d" if dtype in (ChannelType.DOUBLE, ChannelType.FLOAT) else "i"
    if count > 1:
        return NTScalar("a" + code), lambda v: np.asarray(v, dtype=float if code == "d" else np.int32).ravel()
    return NTScalar(code), (float if code == "d" else int)


class _Mirror:
    """One caproto PV as one p4p SharedPV."""

    def __init__(self, name: str, chan: Any, loop: asyncio.AbstractEventLoop):
        from p4p.server.thread import SharedPV

        self.name, self.chan, self.loop = name, chan, loop
        self.nt, self.convert = _nt_for(chan)
        self.enum = self.nt.__class__.__name__ == "NTEnum"
        mirror = self

        class Handler:
            def put(self, pv: Any, op: Any) -> None:
                mirror.put(op)

        self.pv = SharedPV(nt=self.nt, initial=self.nt.wrap(self._value(), timestamp=time.time()),
                           handler=Handler())
        publish = chan.publish

        async def publish_both(flags: Any, *args: Any, **kwargs: Any) -> None:
            await publish(flags, *args, **kwargs)
            self.post()

        chan.publish = publish_both  # this instance only: every caproto post reaches PVA too

    def _value(self) -> Any:
        return self.convert(self.chan.value)

    def post(self) -> None:
        try:
            self.pv.post(self._value(), timestamp=time.time())
        except Exception:  # noqa: BLE001 - a PVA client must not break the CA side
            log.exception("PVA post of %s failed", self.name)

    def put(self, op: Any) -> None:
        raw = op.value()
        value = raw.raw.value if hasattr(raw, "raw") else raw
        if self.enum:
            choices = list(getattr(self.chan, "enum_strings", None) or [])
            index = value["index"] if isinstance(value, dict) or hasattr(value, "get") else int(value)
            value = choices[int(index)] if choices else int(index)
        elif isinstance(value, np.ndarray):
            value = value.copy()

        async def write() -> None:
            await self.chan.write(value)

        future = asyncio.run_coroutine_threadsafe(write(), self.loop)

        def finished(fut: Any) -> None:
            exc = fut.exception()
            if exc is None:
                op.done()
            else:
                op.done(error=f"{type(exc).__name__}: {exc}")

        future.add_done_callback(finished)


class PvaServer:
    """A p4p server mirroring caproto ``channels`` ({pv name: ChannelData}) on ``host``."""

    def __init__(self, channels: dict[str, Any], loop: asyncio.AbstractEventLoop, *, host: str = "127.0.0.1",
                 port: int = 0, broadcast_port: int = 5076):
        from p4p.server import Server

        self.mirrors = {name: _Mirror(name, chan, loop) for name, chan in channels.items()}
        conf = {"EPICS_PVAS_INTF_ADDR_LIST": host, "EPICS_PVAS_BEACON_ADDR_LIST": host,
                "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_PVAS_SERVER_PORT": str(int(port)),
                "EPICS_PVAS_BROADCAST_PORT": str(int(broadcast_port))}
        self.server = Server(providers=[{n: m.pv for n, m in self.mirrors.items()}], conf=conf, useenv=False)

    def stop(self) -> None:
        self.server.stop()


def pva_channels(groups: Iterable[Any]) -> dict[str, Any]:
    """{PV name: caproto ChannelData} for PVA: every plain PV, and each motor record's VAL (as
    ``NAME`` and ``NAME.VAL``) and :data:`MOTOR_FIELDS`."""
    from sdl.sim_devices.ioc.motor import MotorAxisIOC

    channels: dict[str, Any] = {}
    for group in groups:
        if isinstance(group, MotorAxisIOC):
            record = group.motor
            name = record.pvname
            channels[name] = record
            fields = {getattr(inst, "pvspec", None).name if getattr(inst, "pvspec", None) else None: inst
                      for inst in _field_instances(record)}
            for field in MOTOR_FIELDS:
                if field == "VAL":
                    channels[f"{name}.VAL"] = record
                elif field in fields:
                    channels[f"{name}.{field}"] = fields[field]
            continue
        for name, chan in group.pvdb.items():
            channels[name] = chan
    return channels


def _field_instances(record: Any) -> list[Any]:
    f = record.field_inst
    return [getattr(f, attr) for attr in dir(type(f)) if not attr.startswith("_")
            and hasattr(getattr(f, attr, None), "pvspec")]


def pva_client_environment(host: str = "127.0.0.1", broadcast_port: int = 5076) -> dict[str, str]:
    """Environment of a PVA client (p4p, ophyd-async) that finds this server on loopback only."""
    return {"EPICS_PVA_ADDR_LIST": host, "EPICS_PVA_AUTO_ADDR_LIST": "NO",
            "EPICS_PVA_BROADCAST_PORT": str(int(broadcast_port))}


__all__ = ["MOTOR_FIELDS", "PvaServer", "pva_channels", "pva_client_environment"]
