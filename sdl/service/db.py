"""The service's own tables, next to the record's (sdl.store) in the same database.

Accounts, API tokens (only their sha256 is stored), proposals and their members, the
audit log, the experiment queue, the campaigns the service runs, and usage metering.
They live in their own declarative base (``ServiceBase``) so the core store needs no
change; they reference the record's campaigns and runs by id.
"""

from __future__ import annotations

import datetime as dt
import threading
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sdl.database import INSTRUMENT_NAME_MAX, WORKER_ID_MAX, BigID, UTCDateTime, ensure_schema, is_sqlite, make_engine
from sdl.store import Store, jsonable, utcnow

ROLES = ("admin", "scientist", "user")
PROPOSAL_KINDS = ("open", "proprietary", "coalition")
PROPOSAL_STATES = ("pending", "approved", "rejected", "closed")
#: queued -> running -> done | failed | aborted ; queued -> cancelled
ITEM_STATES = ("queued", "running", "done", "failed", "aborted", "cancelled")
ITEM_FINAL = ("done", "failed", "aborted", "cancelled")
#: created -> running <-> paused ; -> stopped | completed | failed
CAMPAIGN_STATES = ("created", "running", "paused", "stopped", "completed", "failed")


def as_utc(t: dt.datetime | None) -> dt.datetime | None:
    """A datetime as UTC-aware (columns read back aware already, see sdl.database.UTCDateTime)."""
    if t is None:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


def iso(t: dt.datetime | None) -> str | None:
    t = as_utc(t)
    return None if t is None else t.isoformat()


class ServiceBase(DeclarativeBase):
    pass


class UserRow(ServiceBase):
    __tablename__ = "svc_users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    email: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TokenRow(ServiceBase):
    __tablename__ = "svc_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("svc_users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    #: sha256 hex of the token; the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class IdentityRow(ServiceBase):
    """An account's identity at an OpenID Connect provider: (issuer, subject) -> user."""

    __tablename__ = "svc_identities"
    issuer: Mapped[str] = mapped_column(String(300), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("svc_users.id"), index=True)
    email: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ProposalRow(ServiceBase):
    __tablename__ = "svc_proposals"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    abstract: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(20))
    coalition: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    pi_id: Mapped[str] = mapped_column(ForeignKey("svc_users.id"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    instruments: Mapped[list] = mapped_column(JSON)
    allocation_experiments: Mapped[int | None] = mapped_column(Integer, nullable=True)
    allocation_hours: Mapped[float | None] = mapped_column(Float, nullable=True)
    dedicated: Mapped[bool] = mapped_column(Boolean, default=False)
    embargo_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(32), nullable=True)


class MemberRow(ServiceBase):
    __tablename__ = "svc_members"
    proposal_id: Mapped[str] = mapped_column(ForeignKey("svc_proposals.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("svc_users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(20), default="member")  # pi | member
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditRow(ServiceBase):
    __tablename__ = "svc_audit"
    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target_type: Mapped[str] = mapped_column(String(30))
    target_id: Mapped[str] = mapped_column(String(64), index=True)
    proposal_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class ItemRow(ServiceBase):
    """One queued unit of instrument work: a submitted experiment or a campaign step."""

    __tablename__ = "svc_queue"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # experiment | campaign
    instrument: Mapped[str] = mapped_column(String(INSTRUMENT_NAME_MAX))
    plan: Mapped[str] = mapped_column(String(60))
    params: Mapped[dict] = mapped_column(JSON)
    proposal_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    campaign_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    suggestion_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    run_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(WORKER_ID_MAX), nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the lease: a fresh token per claim; only its holder may renew it or write the result
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: set by the service to abort an item a worker process runs (seen at its next heartbeat)
    abort_requested: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_svc_queue_dispatch", "instrument", "status", "proposal_id", "priority", "created_at"),
    )


class InstrumentStateRow(ServiceBase):
    """One instrument's shared dispatch state: every worker of it, in any process, claims
    under this row's lock, so the fair queue is one queue however many workers serve it."""

    __tablename__ = "svc_instruments"
    instrument: Mapped[str] = mapped_column(String(INSTRUMENT_NAME_MAX), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    #: a pause that also pauses the running plan at its next checkpoint
    pause_immediate: Mapped[bool] = mapped_column(Boolean, default=False)
    dedicated_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    #: the fair-share state (sdl.service.scheduler.FairState as JSON)
    fair: Mapped[dict] = mapped_column(JSON, default=dict)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WorkerRow(ServiceBase):
    """A worker process (or an embedded worker thread) as it last reported itself."""

    __tablename__ = "svc_workers"
    id: Mapped[str] = mapped_column(String(WORKER_ID_MAX), primary_key=True)
    instrument: Mapped[str] = mapped_column(String(INSTRUMENT_NAME_MAX), index=True)
    host: Mapped[str] = mapped_column(String(200), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    external: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(20), default="starting")
    item_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: safety-relevant device states as last read (e.g. {"shutter": "closed"})
    devices: Mapped[dict] = mapped_column(JSON, default=dict)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ServiceCampaignRow(ServiceBase):
    __tablename__ = "svc_campaigns"
    campaign_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    proposal_id: Mapped[str] = mapped_column(String(32), index=True)
    owner_id: Mapped[str] = mapped_column(String(32))
    instrument: Mapped[str] = mapped_column(String(INSTRUMENT_NAME_MAX))
    state: Mapped[str] = mapped_column(String(20), default="created")
    message: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class UsageRow(ServiceBase):
    """Instrument time one item used, charged to its proposal."""

    __tablename__ = "svc_usage"
    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    proposal_id: Mapped[str] = mapped_column(String(32), index=True)
    instrument: Mapped[str] = mapped_column(String(INSTRUMENT_NAME_MAX))
    item_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    dedicated: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    seconds: Mapped[float] = mapped_column(Float)


class ServiceDB:
    """Sessions on the service's tables (its own engine and pool, the store's database).

    SQLite allows one writer at a time and makes the others wait in a sleeping busy
    handler (up to 100 ms a nap), which wrecks latency under concurrent load. So on
    SQLite every writing session of this process takes ``lock`` first (the record's
    store shares it, see :class:`LockedStore`): writers queue in Python instead, and
    readers (``read()``, WAL) never wait. On a server database the lock is a no-op.
    """

    def __init__(self, url: str, lock: Any = None):
        self.sqlite = is_sqlite(url)
        # PostgreSQL: every replica and worker process has a pool of its own; keep each
        # modest so a facility's processes stay well inside max_connections (100).
        pool = dict(pool_size=20, max_overflow=40) if self.sqlite else dict(pool_size=10, max_overflow=20)
        self.engine: Engine = make_engine(url, pool_timeout=60, **pool)
        try:
            ensure_schema(self.engine)  # the same migrations as the record's store (sdl.database)
        except BaseException:
            self.engine.dispose()
            raise
        self.lock = lock if lock is not None else (threading.RLock() if self.sqlite else nullcontext())
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction that may write."""
        with self.lock, self._session() as s, s.begin():
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session: no lock (never write in it)."""
        with self._session() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()


def audit(s: Session, actor: Any, action: str, target_type: str, target_id: str,
          proposal_id: str | None = None, **detail: Any) -> None:
    """Add one audit entry in the caller's transaction (so it commits with the change)."""
    s.add(AuditRow(
        actor_id=getattr(actor, "user_id", None),
        actor=getattr(actor, "name", None) or str(actor),
        action=action, target_type=target_type, target_id=str(target_id), proposal_id=proposal_id,
        detail=jsonable(detail),
    ))


class LockedStore(Store):
    """The record's store, its sessions taking the service's write lock (see :class:`ServiceDB`)."""

    def __init__(self, url: str, lock: Any):
        super().__init__(url)
        self._write_lock = lock

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._write_lock, super().session() as s:
            yield s
