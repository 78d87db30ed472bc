"""The record: campaigns, suggestions, runs, their documents, and observations.

SQLAlchemy over a SQLite file by default (nothing to install), or PostgreSQL by URL
(:mod:`sdl.database`: the engine, portable types, and the migrations run on open).
Every write that must survive a crash is committed before the next step starts:
documents as they arrive, and the end of a run (its status, the suggestion's status
and the observation) in one transaction, so a run is either finished with its
observation or not finished at all.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sdl.database import BigID, UTCDateTime, ensure_schema, make_engine
from sdl.errors import InvalidInput
from sdl.jsonsafe import jsonable  # noqa: F401  (re-exported: callers import it from here)
from sdl.models import Observation, Provenance, Suggestion


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class CampaignRow(Base):
    __tablename__ = "campaigns"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    spec: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="created")
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class SuggestionRow(Base):
    __tablename__ = "suggestions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict] = mapped_column(JSON)
    provenance: Mapped[dict] = mapped_column(JSON)
    #: pending -> running -> done | failed ; running -> pending when interrupted
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RunRow(Base):
    __tablename__ = "runs"
    uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[str | None] = mapped_column(ForeignKey("campaigns.id"), index=True, nullable=True)
    suggestion_id: Mapped[str | None] = mapped_column(ForeignKey("suggestions.id"), index=True, nullable=True)
    #: running -> success | failed | aborted | interrupted
    status: Mapped[str] = mapped_column(String(20), default="running")
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DocumentRow(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    run_uid: Mapped[str] = mapped_column(ForeignKey("runs.uid"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    doc: Mapped[dict] = mapped_column(JSON)


class ObservationRow(Base):
    __tablename__ = "observations"
    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), index=True)
    suggestion_id: Mapped[str | None] = mapped_column(
        ForeignKey("suggestions.id"), unique=True, nullable=True
    )
    run_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    params: Mapped[dict] = mapped_column(JSON)
    values: Mapped[dict] = mapped_column(JSON)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"


class Store:
    """All reads and writes of the record go through here."""

    def __init__(self, url: str, **pool: Any):
        """Open the store at ``url`` (see :mod:`sdl.database`), migrating it to the newest schema."""
        self.url = url
        self.engine: Engine = make_engine(url, **pool)
        try:
            ensure_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- campaigns
    def create_campaign(self, campaign_id: str, name: str, spec: dict) -> None:
        # the columns' limits, checked here: PostgreSQL enforces them, SQLite would not
        if not campaign_id or len(campaign_id) > 32:
            raise InvalidInput("campaign_id", "1 to 32 characters", campaign_id)
        if len(name) > 200:
            raise InvalidInput("name", "at most 200 characters", f"{name[:40]}... ({len(name)} characters)")
        with self.session() as s:
            s.add(CampaignRow(id=campaign_id, name=name, spec=jsonable(spec)))

    def campaign(self, campaign_id: str) -> CampaignRow:
        with self.session() as s:
            row = s.get(CampaignRow, campaign_id)
            if row is None:
                known = [r for (r,) in s.execute(select(CampaignRow.id).order_by(CampaignRow.created_at.desc()).limit(5))]
                raise InvalidInput("campaign_id", f"no such campaign; recent: {known}", campaign_id)
            return row

    def campaigns(self) -> list[CampaignRow]:
        with self.session() as s:
            return list(s.scalars(select(CampaignRow).order_by(CampaignRow.created_at)))

    def set_campaign_status(self, campaign_id: str, status: str, message: str = "") -> None:
        with self.session() as s:
            s.execute(
                update(CampaignRow)
                .where(CampaignRow.id == campaign_id)
                .values(status=status, message=message, updated_at=utcnow())
            )

    # -------------------------------------------------------------- suggestions
    def add_suggestions(self, campaign_id: str, suggestions: list[Suggestion]) -> None:
        """Store new suggestions, in order, in one transaction."""
        with self.session() as s:
            seq = s.scalar(select(func.count()).where(SuggestionRow.campaign_id == campaign_id)) or 0
            for i, sug in enumerate(suggestions):
                s.add(
                    SuggestionRow(
                        id=sug.id,
                        campaign_id=campaign_id,
                        seq=seq + i,
                        params=jsonable(sug.params),
                        provenance=jsonable(sug.provenance.model_dump()),
                    )
                )

    def suggestions(self, campaign_id: str, status: str | None = None) -> list[SuggestionRow]:
        with self.session() as s:
            q = select(SuggestionRow).where(SuggestionRow.campaign_id == campaign_id)
            if status is not None:
                q = q.where(SuggestionRow.status == status)
            return list(s.scalars(q.order_by(SuggestionRow.seq)))

    @staticmethod
    def to_suggestion(row: SuggestionRow) -> Suggestion:
        return Suggestion(id=row.id, params=row.params, provenance=Provenance(**row.provenance))

    # --------------------------------------------------------------------- runs
    def start_run(self, run_uid: str, campaign_id: str | None, suggestion_id: str | None) -> None:
        with self.session() as s:
            s.add(RunRow(uid=run_uid, campaign_id=campaign_id, suggestion_id=suggestion_id))
            if suggestion_id is not None:
                s.execute(
                    update(SuggestionRow)
                    .where(SuggestionRow.id == suggestion_id)
                    .values(status="running", attempts=SuggestionRow.attempts + 1)
                )

    def add_document(self, run_uid: str, name: str, doc: dict) -> None:
        with self.session() as s:
            s.add(DocumentRow(run_uid=run_uid, name=name, doc=jsonable(doc)))

    def finish_run(
        self,
        run_uid: str,
        status: str,
        reason: str = "",
        observation: Observation | None = None,
        campaign_id: str | None = None,
    ) -> None:
        """End a run; with an observation, store it and close the suggestion atomically."""
        with self.session() as s:
            run = s.get(RunRow, run_uid)
            if run is None:
                raise KeyError(run_uid)
            run.status, run.reason, run.finished_at = status, reason, utcnow()
            if run.suggestion_id is not None:
                new = "done" if status == "success" else "failed" if status == "failed" else "pending"
                s.execute(update(SuggestionRow).where(SuggestionRow.id == run.suggestion_id).values(status=new))
            if observation is not None:
                s.add(
                    ObservationRow(
                        campaign_id=campaign_id or run.campaign_id,
                        suggestion_id=observation.suggestion_id,
                        run_uid=run_uid,
                        params=jsonable(observation.params),
                        values=jsonable(observation.values),
                        ok=observation.ok,
                        extra=jsonable(observation.extra),
                    )
                )

    def recover_interrupted(self, campaign_id: str) -> list[str]:
        """Runs left 'running' by a dead process: mark them interrupted, requeue their points.

        Their partial documents stay in the store. Returns the interrupted run uids.
        """
        with self.session() as s:
            rows = list(
                s.scalars(select(RunRow).where(RunRow.campaign_id == campaign_id, RunRow.status == "running"))
            )
            for run in rows:
                run.status, run.finished_at = "interrupted", utcnow()
                run.reason = run.reason or "process ended before the run finished"
            s.execute(
                update(SuggestionRow)
                .where(SuggestionRow.campaign_id == campaign_id, SuggestionRow.status == "running")
                .values(status="pending")
            )
            return [r.uid for r in rows]

    def runs(self, campaign_id: str) -> list[RunRow]:
        with self.session() as s:
            return list(s.scalars(select(RunRow).where(RunRow.campaign_id == campaign_id).order_by(RunRow.started_at)))

    def documents(self, run_uid: str) -> list[tuple[str, dict]]:
        with self.session() as s:
            rows = s.scalars(select(DocumentRow).where(DocumentRow.run_uid == run_uid).order_by(DocumentRow.id))
            return [(r.name, r.doc) for r in rows]

    # ------------------------------------------------------------- observations
    def observations(self, campaign_id: str) -> list[Observation]:
        with self.session() as s:
            rows = s.scalars(
                select(ObservationRow).where(ObservationRow.campaign_id == campaign_id).order_by(ObservationRow.id)
            )
            return [
                Observation(
                    suggestion_id=r.suggestion_id,
                    params=r.params,
                    values={k: (float("nan") if v is None else v) for k, v in r.values.items()},
                    run_uid=r.run_uid,
                    ok=r.ok,
                    extra=r.extra or {},
                )
                for r in rows
            ]


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj))
