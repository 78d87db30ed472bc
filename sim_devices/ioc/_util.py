"""Plumbing shared by the soft IOCs: awaiting ophyd Statuses, mirroring in-process
signals onto PVs, and a long-string (CHAR waveform) PV type.

The IOCs run in an asyncio event loop (caproto's asyncio server); the in-process
devices they wrap run their actions synchronously (time scale 0) or on timer threads.
:class:`Bridge` keeps each mirrored PV equal to its in-process signal: a change of the
signal (from any thread) schedules a write of the signal's *current* value on the
loop, so a late callback can never overwrite a newer value with an older one.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from caproto import ChannelType
from caproto._dbr import native_type
from caproto.server import pvproperty
from caproto.server.server import PvpropertyChar, PvpropertyCharRO

#: Longest string a long-string PV holds (sample ids, error messages).
LONG_STRING = 256


async def wait_status(status: Any) -> BaseException | None:
    """Wait (without blocking the loop) for an ophyd Status; return its exception or None.

    A Status that is already done (an action at time scale 0) is answered at once: no
    round trip through the loop, so a command's PV updates leave in one burst."""
    if status.done:
        return _exception_of(status)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def _finished(st: Any) -> None:
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    status.add_callback(_finished)
    await done
    return _exception_of(status)


def _exception_of(status: Any) -> BaseException | None:
    try:
        return status.exception()
    except Exception as exc:  # noqa: BLE001 - a status that cannot say is a failure
        return exc


def same(a: Any, b: Any) -> bool:
    """Equality for PV values: arrays elementwise, NaN equal to NaN."""
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        try:
            return np.array_equal(np.asarray(a), np.asarray(b))
        except Exception:  # noqa: BLE001
            return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@dataclass
class _Link:
    signal: Any
    prop: Any  # a caproto ChannelData (a PVGroup attribute)
    convert: Callable[[Any], Any]
    cid: Any = None


class Bridge:
    """Pushes in-process ophyd signal values to caproto PVs (one direction: device -> PV)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task] = set()

    def link(self, signal: Any, prop: Any, convert: Callable[[Any], Any] | None = None) -> None:
        self._links.append(_Link(signal, prop, convert or (lambda v: v)))

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        for link in self._links:
            link.cid = link.signal.subscribe(lambda *a, _l=link, **k: self._changed(_l), run=False)
        await self.sync()

    def close(self) -> None:
        for link in self._links:
            if link.cid is not None:
                link.signal.unsubscribe(link.cid)
                link.cid = None
        self.loop = None

    def _changed(self, link: _Link) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            if threading.get_ident() == self._loop_thread:  # an action run by the IOC itself
                loop.call_soon(self._schedule, link)
            else:
                loop.call_soon_threadsafe(self._schedule, link)
        except RuntimeError:  # the loop closed meanwhile (IOC stopping)
            pass

    def _schedule(self, link: _Link) -> None:
        task = asyncio.ensure_future(self.push(link))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def push(self, link: _Link) -> None:
        value = link.convert(link.signal.get())
        if not same(value, link.prop.value):
            await link.prop.write(value, verify_value=False)

    async def sync(self) -> None:
        """Write every mirrored PV from its signal now (before a command answers)."""
        for link in self._links:
            await self.push(link)


class _LongStringMixin:
    """CHAR waveform holding a string; an all-NUL write (an empty string) is accepted.

    (caproto 1.3 fails converting an all-zero CHAR array from the wire to a str.)
    """

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):  # type: ignore[override]
        if native_type(data_type) == ChannelType.CHAR and not isinstance(data, str):
            raw = data if isinstance(data, bytes) else bytes(np.asarray(data, dtype=np.uint8))
            if not raw.split(b"\0", 1)[0]:
                return await self.write("", flags=flags)
        return await super().write_from_dbr(data, data_type, metadata, flags=flags)


class LongString(_LongStringMixin, PvpropertyChar):
    pass


class LongStringRO(_LongStringMixin, PvpropertyCharRO):
    pass


def long_string(name: str, doc: str, *, read_only: bool = False, value: str = "") -> pvproperty:
    """A long-string PV (CHAR waveform, up to :data:`LONG_STRING` characters)."""
    return pvproperty(
        name=name, value=value, dtype=LongStringRO if read_only else LongString, max_length=LONG_STRING,
        read_only=read_only, doc=doc,
    )


def enum(name: str, strings: tuple[str, ...], doc: str, *, value: str | None = None,
         read_only: bool = True) -> pvproperty:
    return pvproperty(
        name=name, value=value if value is not None else strings[0], dtype=ChannelType.ENUM,
        enum_strings=list(strings), read_only=read_only, doc=doc,
    )
