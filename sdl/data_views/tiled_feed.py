"""Every run of the store, also in Tiled, in the layout bluesky's own Tiled writer makes
(``bluesky_tiled_plugins`` ``TiledWriter``: a ``BlueskyRun`` container per run with the
start document as metadata, one ``BlueskyEventStream`` per stream, the events' data as
tables and arrays), so ``tiled.client`` and Tiled's web page browse them like any
beamline's runs.

The store stays the record and the outbox: the feed is a thread that never touches a
run while it is being made. Once a run has ended (success, failure, abort, interrupted)
it is written to Tiled, and marked complete there (``sdl.complete``). What is still
to send is *computed*, not remembered: the finished runs of the store that Tiled does
not hold complete. So nothing is lost when Tiled is down or slow, or when sdl restarts:
on every (re)connection the feed compares the store with Tiled, removes a run Tiled
holds half-written (the connection broke mid-run) and sends what is missing, oldest
first. A slow or dead Tiled only delays the feed; the lab never waits for it. A run the
server keeps refusing while it answers otherwise (``max_attempts`` times) is skipped
and reported in :meth:`TiledFeed.status`, so one bad run does not hold up the others.

Searchable metadata, beside ``start`` and ``stop`` (the documents as stored)::

    sdl.proposal_id, sdl.campaign_id, sdl.suggestion_id, sdl.sample_id,
    sdl.instrument, sdl.run_status, sdl.reason, sdl.complete

e.g. ``client.search(Key("sdl.campaign_id") == cid)``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from typing import Any, Callable

from sqlalchemy import select

from sdl.store import RunRow, Store

log = logging.getLogger(__name__)

#: run statuses that mean the run has ended and may be sent
FINAL = ("success", "failed", "aborted", "interrupted")


class TiledFeed:
    """Send the store's finished runs to Tiled, in a background thread, catching up after outages.

    ``connect`` returns a logged-in ``tiled.client`` container (the place the runs go);
    it is called again after every failure. ``proposal_of(run_uid)`` names a run's
    proposal when its start document does not. With ``access_tags`` every node carries
    the proposal id as its Tiled access tag (see :mod:`sdl.data_views.tiled_access`).
    """

    def __init__(self, store: Store, connect: Callable[[], Any], *,
                 proposal_of: Callable[[str], str | None] | None = None, access_tags: bool = True,
                 ping: Callable[[], bool] | None = None, poll_s: float = 0.5, backoff_max_s: float = 5.0,
                 overlap_s: float = 120.0, max_attempts: int = 3):
        self.store = store
        self.connect = connect
        self.proposal_of = proposal_of
        self.access_tags = access_tags
        self.ping = ping
        self.poll_s = poll_s
        self.backoff_max_s = backoff_max_s
        self.overlap_s = overlap_s
        self.client: Any = None
        self.max_attempts = max_attempts
        self.attempts: dict[str, int] = {}
        self.failed: dict[str, str] = {}  # run uid -> why Tiled refused it (max_attempts times)
        self.sent: set[str] = set()
        self.skipped: set[str] = set()
        self.last_error: str = ""
        self.sent_total = 0
        self.outages = 0
        self._since: dt.datetime | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --------------------------------------------------------------- lifecycle
    def start(self) -> "TiledFeed":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sdl-tiled-feed", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """A run has ended: look now rather than at the next poll."""
        self._wake.set()

    def status(self) -> dict:
        return {"connected": self.client is not None, "sent": self.sent_total, "pending": len(self.pending()),
                "outages": self.outages, "last_error": self.last_error, "refused": dict(self.failed)}

    def wait_caught_up(self, timeout: float = 60.0) -> bool:
        """Until every finished run of the store is in Tiled (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client is not None and not self.pending():
                return True
            self._wake.set()
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------------- what
    def _finished(self, since: dt.datetime | None = None) -> list[str]:
        with self.store.session() as s:
            q = select(RunRow.uid).where(RunRow.status.in_(FINAL), RunRow.finished_at.is_not(None))
            if since is not None:
                q = q.where(RunRow.finished_at >= since)
            return list(s.scalars(q.order_by(RunRow.finished_at)))

    def pending(self) -> list[str]:
        """Finished runs not yet complete in Tiled, oldest first (as this feed knows it)."""
        with self._lock:
            done = self.sent | self.skipped
        return [u for u in self._finished() if u not in done]

    # -------------------------------------------------------------- the loop
    def _loop(self) -> None:
        backoff = self.poll_s
        while not self._stop.is_set():
            try:
                if self.client is None:
                    if self.ping is not None and not self.ping():
                        raise ConnectionError("the Tiled server does not answer")
                    self.client = self.connect()
                    self.reconcile()
                self.step()
                backoff = self.poll_s
                self._wake.wait(self.poll_s)
                self._wake.clear()
            except Exception as exc:  # noqa: BLE001 - Tiled down, slow, or refusing: retry later
                if self.client is not None or not self.last_error:
                    self.outages += 1
                    log.warning("tiled feed: %s; runs wait in the store and are sent when it is back", exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.client = None
                self._stop.wait(backoff)
                backoff = min(self.backoff_max_s, backoff * 2)

    def reconcile(self) -> None:
        """Compare the store with Tiled: learn what is there complete, drop half-written runs."""
        from tiled.queries import Key

        client = self.client
        present = set(client.keys())
        complete = set(client.search(Key("sdl.complete") == True).keys())  # noqa: E712 - a Tiled query
        finished = set(self._finished())
        partial = [u for u in present - complete if u in finished]
        if partial:
            log.info("tiled feed: rewriting %d half-written runs", len(partial))
            client.delete_contents(partial, recursive=True, external_only=False)
        with self._lock:
            self.sent = complete
        self._since = None

    def step(self) -> int:
        """Send the runs that ended since the last look (all missing ones after a reconnect)."""
        since = None if self._since is None else self._since - dt.timedelta(seconds=self.overlap_s)
        looked_at = dt.datetime.now(dt.timezone.utc)
        n = 0
        for uid in self._finished(since):
            if self._stop.is_set():
                return n
            with self._lock:
                if uid in self.sent or uid in self.skipped:
                    continue
            # a quick look first: tiled's client retries a dead server for up to 45 s
            if self.ping is not None and not self.ping():
                raise ConnectionError("the Tiled server does not answer")
            try:
                self.send(uid)
            except Exception as exc:
                if self.ping is None or not self.ping():
                    raise  # the server went away: an outage, not this run's fault
                self.attempts[uid] = self.attempts.get(uid, 0) + 1
                if self.attempts[uid] < self.max_attempts:
                    raise  # reconnect: the half-written run is removed and written again
                log.error("tiled feed: run %s refused %d times, skipped (still in the store): %s", uid,
                          self.attempts[uid], exc)
                with self._lock:
                    self.skipped.add(uid)
                self.failed[uid] = f"{type(exc).__name__}: {exc}"
            n += 1
        self._since = looked_at
        return n

    # ------------------------------------------------------------------ one run
    def _metadata(self, run: RunRow, start: dict, proposal: str | None) -> dict:
        return {"complete": True, "proposal_id": proposal, "campaign_id": run.campaign_id or start.get("campaign_id"),
                "suggestion_id": run.suggestion_id or start.get("suggestion_id"),
                "sample_id": start.get("sample_id"), "instrument": start.get("instrument"),
                "run_status": run.status, "reason": run.reason,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None}

    def send(self, uid: str) -> None:
        """Write one finished run to Tiled with bluesky's TiledWriter, then mark it complete."""
        from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

        with self.store.session() as s:
            run = s.get(RunRow, uid)
        docs = self.store.documents(uid)
        if run is None or not docs or docs[0][0] != "start":
            with self._lock:
                self.skipped.add(uid)  # nothing a bluesky client could read: no start document
            return
        start = dict(docs[0][1])
        proposal = start.get("proposal") or (self.proposal_of(uid) if self.proposal_of else None) or None
        if self.access_tags:
            from sdl.data_views.tiled_access import NO_PROPOSAL

            start["tiled_access_tags"] = [proposal or NO_PROPOSAL]
        writer = TiledWriter(self.client, batch_size=10_000)
        writer("start", start)
        stopped = False
        for name, doc in docs[1:]:
            writer(name, doc)
            stopped = stopped or name == "stop"
        if not stopped:  # interrupted: the process died before the stop document
            writer("stop", {"uid": str(uuid.uuid4()), "run_start": uid, "exit_status": "abort",
                            "reason": run.reason or "interrupted",
                            "time": (run.finished_at or dt.datetime.now(dt.timezone.utc)).timestamp(),
                            "num_events": {}})
        md = self._metadata(run, start, proposal)
        md["stop_written_by_sdl"] = not stopped
        self.client[uid].update_metadata(metadata={"sdl": md}, drop_revision=True)
        with self._lock:
            self.sent.add(uid)
        self.sent_total += 1
