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
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

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
    """SQLite hands datetimes back naive; they were stored as UTC."""
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
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TokenRow(ServiceBase):
    __tablename__ = "svc_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("svc_users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    #: sha256 hex of the token; the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


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
    embargo_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(32), nullable=True)


class MemberRow(ServiceBase):
    __tablename__ = "svc_members"
    proposal_id: Mapped[str] = mapped_column(ForeignKey("svc_proposals.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("svc_users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(20), default="member")  # pi | member
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRow(ServiceBase):
    __tablename__ = "svc_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
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
    instrument: Mapped[str] = mapped_column(String(60))
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
    worker: Mapped[str | None] = mapped_column(String(120), nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_svc_queue_dispatch", "instrument", "status", "proposal_id", "priority", "created_at"),
    )


class ServiceCampaignRow(ServiceBase):
    __tablename__ = "svc_campaigns"
    campaign_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    proposal_id: Mapped[str] = mapped_column(String(32), index=True)
    owner_id: Mapped[str] = mapped_column(String(32))
    instrument: Mapped[str] = mapped_column(String(60))
    state: Mapped[str] = mapped_column(String(20), default="created")
    message: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class UsageRow(ServiceBase):
    """Instrument time one item used, charged to its proposal."""

    __tablename__ = "svc_usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    proposal_id: Mapped[str] = mapped_column(String(32), index=True)
    instrument: Mapped[str] = mapped_column(String(60))
    item_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    dedicated: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float] = mapped_column(Float)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class ServiceDB:
    """Sessions on the service's tables (its own engine and pool, the store's database).

    SQLite allows one writer at a time and makes the others wait in a sleeping busy
    handler (up to 100 ms a nap), which wrecks latency under concurrent load. So on
    SQLite every writing session of this process takes ``lock`` first (the record's
    store shares it, see :class:`LockedStore`): writers queue in Python instead, and
    readers (``read()``, WAL) never wait. On a server database the lock is a no-op.
    """

    def __init__(self, url: str, lock: Any = None):
        kwargs: dict[str, Any] = {"pool_size": 20, "max_overflow": 40, "pool_timeout": 60}
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.lock = lock if lock is not None else (threading.RLock() if self.sqlite else nullcontext())
        ServiceBase.metadata.create_all(self.engine)
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
