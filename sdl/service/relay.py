"""Live events across processes: whichever process runs a plan, every service replica
streams it.

PostgreSQL (a facility): LISTEN/NOTIFY on the database that already is the store, so
there is nothing else to run (no Redis). A worker sends ``NOTIFY sdl_events`` in the
same transaction that writes the document (or the item's new status), so a
notification arrives only for what is committed, in commit order. NOTIFY payloads are
limited to 8000 bytes: an event carries the document inline only when the whole payload
stays under 7900 bytes; otherwise it carries the document row's id and the listener
reads the row (a detector image, a long scan). Every payload names its origin
process, so a service does not hear its own events twice. ``sdl_queue`` carries an
instrument name whenever an item of it is queued: idle workers wake at once.

SQLite (one host): no notifications; the service polls the documents table (new rows
by id), the queue and the worker rows every ``event_poll_s`` (0.2 s) for the
instruments served by ``sdl worker`` processes, and publishes what changed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable

from sqlalchemy import func, select

from sdl.store import DocumentRow, jsonable

log = logging.getLogger(__name__)

#: PostgreSQL channels: live events (payload: see :func:`encode`) and queue wake-ups
#: (:mod:`sdl.service.dispatch` imports them from here, so the two modules import one way).
EVENTS_CHANNEL = "sdl_events"
QUEUE_CHANNEL = "sdl_queue"

#: NOTIFY's payload limit is 8000 bytes; keep a margin.
MAX_PAYLOAD = 7900
_SMALL_KEYS = ("type", "event", "instrument", "item_id", "kind", "campaign_id", "proposal_id", "status", "state",
               "name", "run_uid", "error", "worker", "suggestion_id", "n", "budget", "objective", "best", "message")


def _dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), separators=(",", ":"))


def item_event(it: Any) -> dict:
    return {"type": "queue", "instrument": it.instrument, "item_id": it.id, "status": it.status,
            "kind": it.kind, "campaign_id": it.campaign_id, "proposal_id": it.proposal_id,
            "run_uid": it.run_uid, "result": it.result, "error": it.error}


def inline_limit() -> int:
    """Payload bytes up to which a document travels inline (``SDL_NOTIFY_INLINE_BYTES``, at
    most :data:`MAX_PAYLOAD`; lower it to send every document by id)."""
    try:
        return max(0, min(MAX_PAYLOAD, int(os.environ.get("SDL_NOTIFY_INLINE_BYTES", MAX_PAYLOAD))))
    except ValueError:
        return MAX_PAYLOAD


def encode(data: dict, proposal_id: str | None, origin: str, doc_id: int | None = None) -> str:
    """The NOTIFY payload of an event (at most :data:`MAX_PAYLOAD` bytes)."""
    text = _dumps({"o": origin, "p": proposal_id, "e": data})
    if len(text.encode()) <= (MAX_PAYLOAD if doc_id is None else inline_limit()):
        return text
    if doc_id is not None:
        return _dumps({"o": origin, "p": proposal_id, "d": doc_id,
                       "e": {k: v for k, v in data.items() if k != "doc"}})
    small = {k: v for k, v in data.items() if k in _SMALL_KEYS}
    small["truncated"] = True
    text = _dumps({"o": origin, "p": proposal_id, "e": small})
    return text if len(text.encode()) <= MAX_PAYLOAD else _dumps({"o": origin, "p": proposal_id,
                                                                   "e": {"type": data.get("type"),
                                                                         "truncated": True}})


def psycopg_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener:
    """A thread holding one LISTEN connection; reconnects (with back-off) after an outage."""

    def __init__(self, url: str, channels: Iterable[str], on_message: Callable[[str, str], None],
                 on_connect: Callable[[bool], None] | None = None, name: str = "sdl-listen"):
        self.dsn = psycopg_dsn(url)
        self.channels = list(channels)
        self.on_message = on_message
        self.on_connect = on_connect
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> "PgListener":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _main(self) -> None:
        import psycopg

        delay, first = 0.1, True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    for ch in self.channels:
                        conn.execute(f"LISTEN {ch}")
                    self.connected.set()
                    if self.on_connect is not None:
                        self.on_connect(not first)
                    first, delay = False, 0.1
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            try:
                                self.on_message(n.channel, n.payload)
                            except Exception:  # noqa: BLE001 - one bad event must not stop the stream
                                log.exception("live event from %s", n.channel)
            except Exception as exc:  # noqa: BLE001 - the database restarts: listen again
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.info("listener: %s; reconnecting", type(exc).__name__)
                self._stop.wait(delay)
                delay = min(2.0, delay * 2)


class EventRelay:
    """The service's side: other processes' events onto its :class:`EventBus`, and its own
    events out to the other replicas (PostgreSQL)."""

    def __init__(self, svc: Any):
        self.svc = svc
        self.db = svc.db
        self.pg = svc.dispatcher.pg
        self.origin = svc.dispatcher.origin
        self.channels = (EVENTS_CHANNEL, QUEUE_CHANNEL)
        self.listener: PgListener | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self.received = 0

    # ------------------------------------------------------------------- out
    def forward(self, data: dict, proposal_id: str | None) -> None:
        """Send a locally published event to the other replicas (PostgreSQL only)."""
        if not self.pg:
            return
        try:
            with self.db.session() as s:
                self.svc.dispatcher.notify(s, encode(data, proposal_id, self.origin))
        except Exception as exc:  # noqa: BLE001 - live events are best effort; the record is in the store
            log.info("relay: %s", exc)

    # -------------------------------------------------------------------- in
    def start(self, external: Iterable[str]) -> None:
        external = list(external)
        if self.pg:
            self.listener = PgListener(self.svc.settings.store_url, self.channels, self._on_pg,
                                       name="sdl-events").start()
        elif external:
            self._poller = threading.Thread(target=self._poll_main, args=(external,), name="sdl-events-poll",
                                            daemon=True)
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self.listener is not None:
            self.listener.stop()
        if self._poller is not None:
            self._poller.join(5)

    def _on_pg(self, channel: str, payload: str) -> None:
        if channel == QUEUE_CHANNEL:
            self.svc.scheduler.wake()
            return
        env = json.loads(payload)
        if env.get("o") == self.origin:
            return
        data = env["e"]
        if "d" in env and "doc" not in data:
            with self.db.read() as s:
                data["doc"] = s.scalar(select(DocumentRow.doc).where(DocumentRow.id == env["d"]))
        self.received += 1
        self.svc.bus.publish(data, env.get("p"), relay=False)
        if data.get("type") == "queue" and data.get("campaign_id"):
            self.svc.campaigns.wake()

    # ------------------------------------------------------------ SQLite poll
    def _poll_main(self, external: list[str]) -> None:
        from sdl.service.db import ITEM_FINAL, ItemRow, WorkerRow

        last_doc = None
        known: dict[str, str] = {}
        worker_state: dict[str, str] = {}
        period = self.svc.settings.event_poll_s
        while not self._stop.wait(period):
            try:
                with self.db.read() as s:
                    top = s.scalar(select(func.max(DocumentRow.id))) or 0
                    if last_doc is None:
                        last_doc = top
                    docs = []
                    if top > last_doc:
                        docs = s.execute(
                            select(DocumentRow.id, DocumentRow.name, DocumentRow.doc, ItemRow)
                            .join(ItemRow, ItemRow.run_uid == DocumentRow.run_uid)
                            .where(DocumentRow.id > last_doc, DocumentRow.id <= top,
                                   ItemRow.instrument.in_(external))
                            .order_by(DocumentRow.id)).all()
                    items = list(s.scalars(select(ItemRow).where(
                        ItemRow.instrument.in_(external),
                        (ItemRow.status.in_(("queued", "running"))) | (ItemRow.id.in_(list(known))))))
                    workers = list(s.scalars(select(WorkerRow).where(WorkerRow.instrument.in_(external))))
                # a run's 'running' before its documents, its documents before its end
                finals = []
                for it in items:
                    prev = known.get(it.id)
                    if prev != it.status and not (prev is None and it.status == "queued"):
                        if it.status in ITEM_FINAL:
                            finals.append(it)
                        else:
                            self.svc.bus.publish(item_event(it), it.proposal_id, relay=False)
                    if it.status in ITEM_FINAL:
                        known.pop(it.id, None)
                    else:
                        known[it.id] = it.status
                for _id, name, doc, it in docs:
                    self.svc.bus.publish({"type": "document", "instrument": it.instrument, "item_id": it.id,
                                          "kind": it.kind, "campaign_id": it.campaign_id,
                                          "proposal_id": it.proposal_id, "name": name, "doc": doc},
                                         it.proposal_id, relay=False)
                for it in finals:
                    self.svc.bus.publish(item_event(it), it.proposal_id, relay=False)
                    if it.campaign_id:
                        self.svc.campaigns.wake()
                last_doc = top
                for w in workers:
                    if worker_state.get(w.id) != w.state:
                        worker_state[w.id] = w.state
                        self.svc.bus.publish({"type": "instrument", "instrument": w.instrument, "state": w.state,
                                              "worker": w.id}, None, relay=False)
            except Exception as exc:  # noqa: BLE001 - try again next period
                log.info("event poll: %s", exc)
                time.sleep(period)


class QueueWaker:
    """An idle ``sdl worker`` sleeps until an item of its instrument is queued (PostgreSQL),
    or polls (SQLite)."""

    def __init__(self, url: str, instrument: str, pg: bool):
        self.instrument = instrument
        self._event = threading.Event()
        self.listener = (PgListener(url, [QUEUE_CHANNEL], self._on, on_connect=lambda _r: self._event.set(),
                                    name="sdl-wake").start() if pg else None)

    def _on(self, channel: str, payload: str) -> None:
        if payload == self.instrument:
            self._event.set()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
