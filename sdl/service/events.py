"""The live stream: workers and the campaign planner publish, WebSocket clients receive.

Publishing happens on worker threads; each subscriber is an asyncio queue on the
server's event loop, fed with ``call_soon_threadsafe``. A slow client loses its
oldest events (counted in ``dropped``), never slows an instrument down. Each event is
serialised once, whoever receives it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable

from sdl.store import jsonable


class Event:
    __slots__ = ("data", "proposal_id", "_text", "_public_text")

    def __init__(self, data: dict[str, Any], proposal_id: str | None = None):
        data.setdefault("published_at", time.time())
        self.data = data
        self.proposal_id = proposal_id
        self._text: str | None = None
        self._public_text: str | None = None

    @property
    def type(self) -> str:
        return self.data.get("type", "")

    def text(self) -> str:
        if self._text is None:
            self._text = json.dumps(jsonable(self.data))
        return self._text

    def public_text(self) -> str:
        """The event as someone outside its proposal may see it: what, where, when; no data."""
        if self._public_text is None:
            keep = ("type", "instrument", "item_id", "status", "state", "published_at", "position", "kind")
            d = {k: v for k, v in self.data.items() if k in keep}
            d["redacted"] = True
            self._public_text = json.dumps(jsonable(d))
        return self._public_text


class Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int, accept: Callable[[Event], str | None]):
        self.loop = loop
        #: (event, its text as accepted when published); the stream filters again as it sends
        self.queue: asyncio.Queue[tuple[Event, str]] = asyncio.Queue(maxsize=maxsize)
        self.accept = accept
        self.dropped = 0

    def _put(self, text: tuple[Event, str]) -> None:
        if self.queue.full():
            try:
                self.queue.get_nowait()
                self.dropped += 1
            except asyncio.QueueEmpty:  # pragma: no cover
                pass
        self.queue.put_nowait(text)


class EventBus:
    def __init__(self, maxsize: int = 5000):
        self.maxsize = maxsize
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()
        #: sends a locally published event on to the other processes (see sdl.service.relay)
        self.forward: Callable[[dict, str | None], None] | None = None

    def subscribe(self, loop: asyncio.AbstractEventLoop, accept: Callable[[Event], str | None]) -> Subscriber:
        sub = Subscriber(loop, self.maxsize, accept)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def n_subscribers(self) -> int:
        return len(self._subs)

    def publish(self, data: dict[str, Any], proposal_id: str | None = None, relay: bool = True) -> None:
        """Deliver to this process's subscribers; with ``relay`` also to the other service
        replicas (``forward``). Events that came from elsewhere, or that were already sent
        in the transaction that wrote them, are published with ``relay=False``."""
        if relay and self.forward is not None:
            self.forward(data, proposal_id)
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        event = Event(data, proposal_id)
        for sub in subs:
            try:
                text = sub.accept(event)
            except Exception:  # noqa: BLE001 - a broken filter must not stop an instrument
                text = None
            if text is None:
                continue
            try:
                sub.loop.call_soon_threadsafe(sub._put, (event, text))
            except RuntimeError:  # loop closed: the client is gone
                self.unsubscribe(sub)
