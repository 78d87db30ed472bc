"""Dispatch through the store: fair claims, leases, heartbeats, one-transaction finish,
and the sweeper of expired leases. No HTTP and no in-memory queue: every worker, an
embedded thread of ``sdl serve`` or an ``sdl worker`` process on another host, goes
through these calls on the shared database, so they all obey one fair queue.

Claim (one transaction)
    lock the instrument's row in ``svc_instruments`` (PostgreSQL ``SELECT ... FOR
    UPDATE``; SQLite: a first no-op UPDATE takes the database's write lock), read the
    fair-share state stored in it, choose the proposal (:func:`sdl.service.scheduler.choose`),
    take its head item with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite
    has no row locks and serialises writers anyway), then ``UPDATE ... WHERE status =
    'queued'`` sets it running with the worker's id, a fresh lease token and the lease's
    expiry, and the new fair state is written back. Claims of one instrument serialise on
    its row (a few milliseconds); claims of different instruments do not meet.

Lease
    the worker renews ``lease_expires_at`` every ``heartbeat_s`` with ``UPDATE ...
    WHERE lease_token = :mine``. Zero rows means the lease was taken (the sweeper gave
    the item to someone else): the worker aborts its plan and writes nothing more.

Finish (one transaction)
    ``UPDATE svc_queue ... WHERE id = :id AND lease_token = :mine AND status =
    'running'``; only if that hits one row are the run's end, the suggestion's status,
    the observation, the usage row and the time charge written, all in the same
    transaction. A worker whose lease was taken cannot write its result.

Sweep
    running items whose lease expired: their run is closed as ``interrupted`` (partial
    documents kept), an experiment goes back to the queue (or fails after
    ``max_attempts``), a campaign step is withdrawn and its suggestion is pending again.
    Each recovery is a conditional UPDATE on the lease token, so two sweepers (the
    service's and a worker's) never recover one item twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from sqlalchemy import DateTime, and_, func, or_, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from sdl.models import Observation, new_id
from sdl.service.db import (
    InstrumentStateRow,
    ItemRow,
    ProposalRow,
    ServiceDB,
    UsageRow,
    WorkerRow,
    audit,
)
from sdl.service.relay import EVENTS_CHANNEL, QUEUE_CHANNEL, encode, item_event  # relay imports no dispatch
from sdl.store import DocumentRow, ObservationRow, RunRow, SuggestionRow, jsonable, utcnow

log = logging.getLogger(__name__)


_SYSTEM = type("System", (), {"user_id": "", "name": "system"})()


class LeaseLost(Exception):
    """The item's lease is no longer ours: another worker may hold it."""


def is_disconnect(exc: BaseException) -> bool:
    """A lost or refused database connection (restart, network): retry, do not fail."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted while connections were being re-made
        return True
    name = type(exc).__name__
    return name in ("OperationalError", "InterfaceError", "AdminShutdown", "ConnectionTimeout")


def retry(fn: Callable[[], Any], *, what: str, stop: Callable[[], bool] = lambda: False,
          timeout: float = 600.0) -> Any:
    """Call ``fn`` until it gets through a database outage (disconnects only; other errors raise)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - sorted below
            if not is_disconnect(exc) or time.monotonic() > deadline or stop():
                raise
            log.warning("%s: database unavailable (%s); retrying", what, type(exc).__name__)
            time.sleep(delay)
            delay = min(1.0, delay * 2)


@dataclass
class Lease:
    """An item claimed by one worker, and the token that proves it."""

    item: ItemRow
    token: str
    worker_id: str
    started: float
    lost: bool = False

    @property
    def id(self) -> str:
        return self.item.id


class Dispatcher:
    def __init__(self, db: ServiceDB, *, lease_timeout_s: float, max_attempts: int, origin: str = ""):
        self.db = db
        self.pg = db.engine.dialect.name == "postgresql"
        self.lease_s = float(lease_timeout_s)
        self.max_attempts = int(max_attempts)
        self.origin = origin

    # ------------------------------------------------------------------ clock
    def _now(self) -> Any:
        """The database's clock on PostgreSQL (hosts' clocks may differ; the wall clock, not the
        transaction's start, so claims are stamped in the order they got the lock); ours on
        SQLite (one host)."""
        return func.clock_timestamp(type_=DateTime(timezone=True)) if self.pg else utcnow()

    def _expiry(self) -> Any:
        return self._now() + dt.timedelta(seconds=self.lease_s)

    def _expired_before(self) -> Any:
        return self._now() - dt.timedelta(seconds=self.lease_s)

    # ------------------------------------------------------------ instruments
    def ensure_instrument(self, name: str, dedicated_fraction: float = 0.0) -> None:
        def go() -> None:
            with self.db.session() as s:
                if s.get(InstrumentStateRow, name) is None:
                    s.add(InstrumentStateRow(instrument=name, dedicated_fraction=dedicated_fraction, fair={}))
        try:
            retry(go, what="instrument row")
        except sa_exc.IntegrityError:  # another process made it meanwhile
            pass

    def _lock_instrument(self, s: Session, name: str) -> InstrumentStateRow | None:
        if self.pg:
            return s.scalar(select(InstrumentStateRow).where(InstrumentStateRow.instrument == name)
                            .with_for_update())
        # SQLite: a write first, so the transaction holds the write lock before it reads
        s.execute(update(InstrumentStateRow).where(InstrumentStateRow.instrument == name)
                  .values(claims=InstrumentStateRow.claims))
        return s.get(InstrumentStateRow, name)

    def instrument_state(self, name: str) -> InstrumentStateRow | None:
        with self.db.read() as s:
            return s.get(InstrumentStateRow, name)

    def set_paused(self, name: str, paused: bool, immediate: bool = False) -> None:
        """Once this returns no claim of ``name`` is in flight and none starts (any process)."""
        self.ensure_instrument(name)
        with self.db.session() as s:
            row = self._lock_instrument(s, name)
            row.paused, row.pause_immediate = paused, bool(paused and immediate)
            row.updated_at = utcnow()

    def set_dedicated_fraction(self, name: str, fraction: float) -> None:
        self.ensure_instrument(name)
        with self.db.session() as s:
            row = self._lock_instrument(s, name)
            row.dedicated_fraction = float(fraction)

    # ------------------------------------------------------------------ claim
    def claim(self, instrument: str, worker_id: str, may_run: Callable[[], bool] | None = None) -> Lease | None:
        """Claim the next item of ``instrument`` (fair share, see sdl.service.scheduler), or None."""
        from sdl.service.scheduler import FairState, choose, record_claim

        t0 = time.time()
        with self.db.session() as s:
            st = self._lock_instrument(s, instrument)
            if st is None:
                st = InstrumentStateRow(instrument=instrument, dedicated_fraction=0.0, fair={})
                s.add(st)
                s.flush()
            if st.paused or (may_run is not None and not may_run()):
                return None
            # one fair queue with the instrument's workflow tasks (sdl.workflows.fairqueue)
            from sdl.workflows import fairqueue as fq

            if fq.device_held(s, instrument):  # a workflow task has the instrument
                return None
            tasks = fq.startable_tasks(s, instrument)
            cands = fq.candidates(s, instrument, tasks)
            if not cands:
                return None
            state = FairState.from_json(st.fair)
            while cands:
                pid = choose(state, cands, st.dedicated_fraction)
                if fq.next_is_task(s, instrument, pid, tasks):
                    return None  # the fair head is a workflow task: a workflow worker takes it
                q = (select(ItemRow).where(ItemRow.instrument == instrument, ItemRow.status == "queued",
                                           ItemRow.proposal_id == pid)
                     .order_by(ItemRow.priority.desc(), ItemRow.created_at, ItemRow.id).limit(1))
                if self.pg:
                    q = q.with_for_update(skip_locked=True)
                head = s.scalar(q)
                if head is None:
                    cands.pop(pid)
                    continue
                token = new_id()
                claimed = s.execute(
                    update(ItemRow).where(ItemRow.id == head.id, ItemRow.status == "queued")
                    .values(status="running", worker=worker_id, started_at=self._now(), heartbeat_at=self._now(),
                            lease_token=token, lease_expires_at=self._expiry(), abort_requested=None,
                            attempts=ItemRow.attempts + 1, run_uid=None)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if claimed != 1:
                    cands.pop(pid)
                    continue
                record_claim(st, state, pid, cands[pid].dedicated)
                s.flush()
                s.refresh(head)
                self._notify_item(s, head)
                s.expunge(head)
                return Lease(head, token, worker_id, t0)
        return None

    # ------------------------------------------------------------------ lease
    def renew(self, lease: Lease) -> str | None:
        """Extend the lease. Returns an abort reason the service asked for (or None);
        raises :class:`LeaseLost` when the lease is no longer ours."""
        with self.db.session() as s:
            n = s.execute(update(ItemRow).where(ItemRow.id == lease.id, ItemRow.lease_token == lease.token,
                                                ItemRow.status == "running")
                          .values(heartbeat_at=self._now(), lease_expires_at=self._expiry())
                          .execution_options(synchronize_session=False)).rowcount
            if n != 1:
                lease.lost = True
                raise LeaseLost(lease.id)
            return s.scalar(select(ItemRow.abort_requested).where(ItemRow.id == lease.id))

    def holds(self, lease: Lease) -> bool:
        with self.db.read() as s:
            return s.scalar(select(func.count()).select_from(ItemRow).where(
                ItemRow.id == lease.id, ItemRow.lease_token == lease.token, ItemRow.status == "running")) == 1

    def request_abort(self, item_id: str, reason: str) -> bool:
        with self.db.session() as s:
            return s.execute(update(ItemRow).where(ItemRow.id == item_id, ItemRow.status == "running")
                             .values(abort_requested=reason or "aborted")
                             .execution_options(synchronize_session=False)).rowcount == 1

    # -------------------------------------------------------------- documents
    def open_run(self, lease: Lease, uid: str, campaign_id: str | None, suggestion_id: str | None,
                 docs: list[tuple[str, dict]], meta: dict) -> list[int]:
        """The run's row, the item's run uid and the first documents, in one transaction."""
        with self.db.session() as s:
            n = s.execute(update(ItemRow).where(ItemRow.id == lease.id, ItemRow.lease_token == lease.token,
                                                ItemRow.status == "running")
                          .values(run_uid=uid, heartbeat_at=self._now())
                          .execution_options(synchronize_session=False)).rowcount
            if n != 1:
                lease.lost = True
                raise LeaseLost(lease.id)
            s.add(RunRow(uid=uid, campaign_id=campaign_id, suggestion_id=suggestion_id))
            s.flush()
            if suggestion_id is not None:
                s.execute(update(SuggestionRow).where(SuggestionRow.id == suggestion_id)
                          .values(status="running", attempts=SuggestionRow.attempts + 1)
                          .execution_options(synchronize_session=False))
            return self._add_docs(s, uid, docs, meta)
        # unreachable

    def add_documents(self, uid: str, docs: list[tuple[str, dict]], meta: dict) -> list[int]:
        with self.db.session() as s:
            return self._add_docs(s, uid, docs, meta)

    def _add_docs(self, s: Session, uid: str, docs: list[tuple[str, dict]], meta: dict) -> list[int]:
        rows = [DocumentRow(run_uid=uid, name=name, doc=jsonable(doc)) for name, doc in docs]
        s.add_all(rows)
        s.flush()
        if self.pg:
            for r in rows:
                data = {**meta, "type": "document", "name": r.name, "doc": r.doc}
                self.notify(s, encode(data, meta.get("proposal_id"), self.origin, doc_id=r.id))
        return [r.id for r in rows]

    # -------------------------------------------------------------- notify
    def notify(self, s: Session, payload: str, channel: str = EVENTS_CHANNEL) -> None:
        if self.pg:
            s.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})

    def _notify_item(self, s: Session, it: ItemRow) -> None:
        if self.pg:
            self.notify(s, encode(item_event(it), it.proposal_id, self.origin))
            if it.status == "queued":
                self.notify(s, it.instrument, QUEUE_CHANNEL)

    def notify_queued(self, instrument: str) -> None:
        """Wake the workers of ``instrument`` (PostgreSQL; SQLite workers poll)."""
        if self.pg:
            with self.db.session() as s:
                self.notify(s, instrument, QUEUE_CHANNEL)

    # ----------------------------------------------------------------- finish
    def finish(self, lease: Lease, status: str, *, run_uid: str | None = None, run_status: str | None = None,
               run_reason: str = "", suggestion_status: str | None = None, observation: Observation | None = None,
               campaign_id: str | None = None, result: dict | None = None, error: str = "",
               seconds: float | None = None) -> ItemRow:
        """End the item and everything that goes with it in one transaction, if the lease is
        still ours (else :class:`LeaseLost` and nothing is written).

        ``status`` 'queued': the item goes back to the queue (a stopping worker: not an attempt's fault).
        """
        from sdl.service.scheduler import CHARGE_PER_MINUTE, FairState, charge

        seconds = float(time.time() - lease.started if seconds is None else seconds)
        with self.db.session() as s:
            now = utcnow()
            if status == "queued":
                values: dict[str, Any] = dict(status="queued", run_uid=None, error=error, started_at=None,
                                              worker=None, lease_token=None, lease_expires_at=None,
                                              abort_requested=None)
            else:
                values = dict(status=status, result=jsonable(result), error=error, finished_at=now,
                              lease_token=None, lease_expires_at=None)
                if run_uid is not None:
                    values["run_uid"] = run_uid
            n = s.execute(update(ItemRow).where(ItemRow.id == lease.id, ItemRow.lease_token == lease.token,
                                                ItemRow.status == "running").values(**values)
                          .execution_options(synchronize_session=False)).rowcount
            if n != 1:
                lease.lost = True
                raise LeaseLost(lease.id)
            if run_uid is not None and run_status is not None:
                run = s.get(RunRow, run_uid)
                if run is not None and run.status == "running":
                    run.status, run.reason, run.finished_at = run_status, run_reason, now
            sid = lease.item.suggestion_id
            if sid is not None and suggestion_status is not None:
                s.execute(update(SuggestionRow).where(SuggestionRow.id == sid).values(status=suggestion_status)
                          .execution_options(synchronize_session=False))
            if observation is not None:
                s.add(ObservationRow(campaign_id=campaign_id or lease.item.campaign_id,
                                     suggestion_id=observation.suggestion_id, run_uid=observation.run_uid,
                                     params=jsonable(observation.params), values=jsonable(observation.values),
                                     ok=observation.ok, extra=jsonable(observation.extra)))
            it = s.get(ItemRow, lease.id)
            if status != "cancelled" or seconds >= 0.001:
                prop = s.get(ProposalRow, it.proposal_id)
                dedicated = bool(prop and prop.dedicated)
                s.add(UsageRow(proposal_id=it.proposal_id, instrument=it.instrument, item_id=it.id, kind=it.kind,
                               status="interrupted" if status == "queued" else status, dedicated=dedicated,
                               started_at=dt.datetime.fromtimestamp(lease.started, dt.timezone.utc),
                               finished_at=now, seconds=seconds))
                # whole seconds: sub-second runs (instant simulation) do not break ties at random
                minutes = CHARGE_PER_MINUTE * int(seconds) / 60.0
                if minutes > 0:
                    st = self._lock_instrument(s, it.instrument)
                    if st is not None:
                        state = FairState.from_json(st.fair)
                        charge(state, it.proposal_id, dedicated, minutes)
                        st.fair = state.to_json()
            if status == "queued" and self.pg:
                self.notify(s, it.instrument, QUEUE_CHANNEL)
            self._notify_item(s, it)
            s.flush()
            s.expunge(it)
        return it

    # ------------------------------------------------------------------ sweep
    def sweep(self, *, instruments: Iterable[str] | None = None, all_running: bool = False,
              exclude: Iterable[str] = (), reason: str = "lease expired: the worker stopped") -> list[ItemRow]:
        """Recover running items whose lease expired (``all_running``: every running item of
        ``instruments``, e.g. at the start of the only process that serves them)."""
        exclude = set(exclude)
        with self.db.read() as s:
            q = select(ItemRow).where(ItemRow.status == "running")
            if instruments is not None:
                q = q.where(ItemRow.instrument.in_(list(instruments)))
            if not all_running:
                q = q.where(or_(ItemRow.lease_expires_at < self._now(),
                                and_(ItemRow.lease_expires_at.is_(None),
                                     ItemRow.heartbeat_at < self._expired_before())))
            candidates = [it for it in s.scalars(q) if it.id not in exclude]
        out = []
        for it in candidates:
            try:
                row = self._recover_one(it, reason, all_running)
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the sweep
                if is_disconnect(exc):
                    raise
                log.exception("recovering item %s", it.id)
                continue
            if row is not None:
                out.append(row)
        if out:
            log.warning("recovered %d item(s) whose worker stopped", len(out))
        return out

    def _recover_one(self, it: ItemRow, reason: str, forced: bool) -> ItemRow | None:
        same_lease = ItemRow.lease_token.is_(None) if it.lease_token is None else ItemRow.lease_token == it.lease_token
        now = utcnow()
        with self.db.session() as s:
            if it.kind == "campaign":
                values: dict[str, Any] = dict(status="cancelled", error=f"interrupted: {reason}", finished_at=now)
                new = "cancelled"
            elif it.attempts >= self.max_attempts:
                values = dict(status="failed", error=f"interrupted too many times ({it.attempts}): {reason}",
                              finished_at=now)
                new = "failed"
            else:
                values = dict(status="queued", error=f"interrupted: {reason}; queued again", run_uid=None,
                              started_at=None, worker=None)
                new = "queued"
            values.update(lease_token=None, lease_expires_at=None, abort_requested=None)
            n = s.execute(update(ItemRow).where(ItemRow.id == it.id, ItemRow.status == "running", same_lease)
                          .values(**values).execution_options(synchronize_session=False)).rowcount
            if n != 1:
                return None  # renewed, finished or recovered by someone else meanwhile
            if it.run_uid:
                run = s.get(RunRow, it.run_uid)
                if run is not None and run.status == "running":
                    run.status, run.finished_at = "interrupted", now
                    run.reason = run.reason or f"interrupted: {reason}"
            if it.suggestion_id:  # the campaign queues its point again
                s.execute(update(SuggestionRow).where(SuggestionRow.id == it.suggestion_id,
                                                      SuggestionRow.status == "running").values(status="pending")
                          .execution_options(synchronize_session=False))
            started = it.started_at
            last = it.heartbeat_at or started
            if started is not None and last is not None:
                from sdl.service.db import as_utc

                secs = max(0.0, (as_utc(last) - as_utc(started)).total_seconds())
                prop = s.get(ProposalRow, it.proposal_id)
                s.add(UsageRow(proposal_id=it.proposal_id, instrument=it.instrument, item_id=it.id, kind=it.kind,
                               status="interrupted", dedicated=bool(prop and prop.dedicated),
                               started_at=as_utc(started), finished_at=now, seconds=secs))
            audit(s, _SYSTEM, "experiment.recover", "experiment", it.id, it.proposal_id, status=new,
                  worker=it.worker, run_uid=it.run_uid, lease_expired=not forced, reason=reason)
            row = s.get(ItemRow, it.id)
            self._notify_item(s, row)
            s.flush()
            s.expunge(row)
            return row

    # ---------------------------------------------------------------- workers
    def report_worker(self, worker_id: str, instrument: str, *, state: str, item_id: str | None,
                      devices: dict | None = None, external: bool = True, host: str = "", pid: int = 0) -> None:
        with self.db.session() as s:
            row = s.get(WorkerRow, worker_id)
            if row is None:
                row = WorkerRow(id=worker_id, instrument=instrument, host=host, pid=pid, external=external)
                s.add(row)
            row.state, row.item_id, row.seen_at = state, item_id, utcnow()
            if devices is not None:
                row.devices = jsonable(devices)

    def workers(self, instrument: str | None = None) -> list[WorkerRow]:
        with self.db.read() as s:
            q = select(WorkerRow).order_by(WorkerRow.seen_at.desc())
            if instrument is not None:
                q = q.where(WorkerRow.instrument == instrument)
            return list(s.scalars(q))


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), separators=(",", ":"))
