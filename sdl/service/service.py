"""The service: accounts, proposals, the queue, campaigns, data and metering.

:class:`LabService` holds the store, the service tables, the scheduler, one worker per
instrument, the campaign planner and the live-event bus. The HTTP layer
(:mod:`sdl.service.api`) only translates between HTTP and these methods; every change
is audited in the same transaction as the change itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
import threading
import time
from typing import Any, Iterable

from sqlalchemy import case, func, select, update

from sdl.campaign import CampaignSpec, best_trace, create_campaign
from sdl.errors import InvalidInput
from sdl.models import new_id
from sdl.service.access import AccessView, MembershipCache
from sdl.service.auth import Authenticator, Principal, RateLimiter
from sdl.service.authz import can, redact_audit_detail, require
from sdl.service.db import (
    ITEM_FINAL,
    AuditRow,
    ItemRow,
    LockedStore,
    MemberRow,
    ProposalRow,
    ServiceCampaignRow,
    ServiceDB,
    TokenRow,
    UsageRow,
    UserRow,
    audit,
    iso,
)
from sdl.service.errors import Conflict, Forbidden, NotFound
from sdl.service.events import EventBus
from sdl.service.scheduler import Scheduler
from sdl.service.settings import ServiceSettings
from sdl.space import ChoiceParameter, FixedParameter, RangeParameter
from sdl.store import CampaignRow, RunRow, Store, jsonable, utcnow

log = logging.getLogger(__name__)

SYSTEM = Principal("", "system", "admin", "")


def csv_cell(v: Any) -> Any:
    """A value for a CSV cell that a spreadsheet will not run as a formula (OWASP: text starting
    with = + - @ tab or CR gets a leading quote); numbers stay numbers."""
    if v is None:
        return ""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise Forbidden(msg)


class LabService:
    def __init__(self, settings: ServiceSettings):
        from sdl.service.campaigns import CampaignManager
        from sdl.service.dispatch import Dispatcher
        from sdl.service.relay import EventRelay
        from sdl.service.workers import InstrumentWorker

        self.settings = settings
        self.db = ServiceDB(settings.store_url)
        self.store: Store = LockedStore(settings.store_url, self.db.lock)
        self.auth = Authenticator(self.db)
        self.members = MembershipCache(self.db)
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.address_limiter = RateLimiter(settings.rate_limit_per_address_per_minute,
                                           settings.rate_limit_address_burst)
        self.failure_limiter = RateLimiter(settings.auth_failures_per_minute, settings.auth_failures_burst)
        self.origin = new_id()[:12]
        self.dispatcher = Dispatcher(self.db, lease_timeout_s=settings.lease_timeout_s,
                                     max_attempts=settings.max_attempts, origin=self.origin)
        self.bus = EventBus(settings.ws_queue_size)
        self.relay = EventRelay(self)
        self.bus.forward = self.relay.forward if self.dispatcher.pg else None
        self.scheduler = Scheduler(self)
        self.poll_s = settings.event_poll_s
        self.workers: dict[str, Any] = {
            cfg.name: (ExternalInstrument(self, cfg) if settings.is_external(cfg) else InstrumentWorker(self, cfg))
            for cfg in settings.instruments
        }
        self.campaigns = CampaignManager(self)
        self.started = False
        self.relay_started = False
        self.data_views: Any = None  # Tiled feed (sdl.data_views), when the settings ask for it
        self._lock = threading.RLock()

    @property
    def embedded(self) -> list[str]:
        """Instruments whose worker is a thread of this process."""
        return [n for n, w in self.workers.items() if not getattr(w, "external", False)]

    @property
    def external(self) -> list[str]:
        return [n for n, w in self.workers.items() if getattr(w, "external", False)]

    # ---------------------------------------------------------------- lifecycle
    def bootstrap(self) -> str | None:
        """On first start (no users yet): create the admin; return its token (shown once)."""
        with self.db.session() as s:
            if s.scalar(select(func.count()).select_from(UserRow)):
                return None
            admin = UserRow(id=new_id(), name=self.settings.admin_name, role="admin")
            s.add(admin)
            s.flush()
            given = self.settings.admin_token.get_secret_value() if self.settings.admin_token else None
            _, token = Authenticator.issue(s, admin.id, "bootstrap", None, token=given)
            audit(s, SYSTEM, "user.create", "user", admin.id, role="admin", name=admin.name, bootstrap=True)
        return token

    def start_relay(self) -> None:
        """Live events of other processes (sdl worker, other replicas) onto this bus."""
        if not self.relay_started:
            self.relay.start(self.external)
            self.relay_started = True

    def start(self) -> None:
        if self.started:
            return
        self.start_relay()
        self.recover()
        for w in self.workers.values():
            w.start()
        self.campaigns.start()
        from sdl.data_views.service_hook import start_data_views

        self.data_views = start_data_views(self)
        self.started = True

    def stop(self) -> None:
        if self.data_views is not None:
            self.data_views.stop()
            self.data_views = None
        if self.started:
            self.campaigns.stop()
            for w in self.workers.values():
                w.stop()
            self.started = False
        if self.relay_started:
            self.relay.stop()
            self.relay_started = False
        self.store.close()
        self.db.close()

    def recover(self, expired_only: bool = False) -> int:
        """Items a dead worker left running: experiments go back to the queue (up to
        ``max_attempts``), campaign steps are withdrawn (the campaign re-queues its point);
        their runs are closed as interrupted, partial documents kept.

        At start, every running item of an instrument whose worker is a thread of this
        process is such an item (this process is the only one that serves it); items of
        instruments served by ``sdl worker`` processes only when their lease expired. Later
        (``expired_only``, every few seconds) those whose lease expired, anywhere.
        """
        mine = [w.current.id for w in self.workers.values() if getattr(w, "current", None) is not None]
        rows = []
        if not expired_only and self.embedded:
            rows += self.dispatcher.sweep(instruments=self.embedded, all_running=True, exclude=mine,
                                          reason="the service stopped")
        rows += self.dispatcher.sweep(exclude=mine)
        for it in rows:
            self.bus.publish(self._item_event(it), it.proposal_id, relay=not self.dispatcher.pg)
        if rows:
            self.scheduler.wake()
            self.campaigns.wake()
        return len(rows)

    # -------------------------------------------------------------- principals
    def view(self, p: Principal) -> AccessView:
        return AccessView(self.db, p, self.members)

    def _user_by(self, s, key: str) -> UserRow | None:
        return s.get(UserRow, key) or s.scalar(select(UserRow).where(UserRow.name == key))

    @staticmethod
    def user_json(u: UserRow) -> dict:
        return {"id": u.id, "name": u.name, "role": u.role, "email": u.email, "active": u.active,
                "created_at": iso(u.created_at)}

    @staticmethod
    def token_json(t: TokenRow) -> dict:
        return {"id": t.id, "user_id": t.user_id, "name": t.name, "prefix": t.prefix,
                "created_at": iso(t.created_at), "expires_at": iso(t.expires_at), "revoked_at": iso(t.revoked_at)}

    def me(self, p: Principal) -> dict:
        with self.db.read() as s:
            u = s.get(UserRow, p.user_id)
        out = self.user_json(u)
        out["proposals"] = self.view(p).member_of
        return out

    def create_user(self, p: Principal, name: str, role: str, email: str = "", ttl_days: float | None = None) -> dict:
        require(p, "accounts.manage", "only admins create accounts")
        with self.db.session() as s:
            if s.scalar(select(UserRow).where(UserRow.name == name)) is not None:
                raise Conflict(f"user {name!r} exists")
            u = UserRow(id=new_id(), name=name, role=role, email=email)
            s.add(u)
            s.flush()
            tok, token = Authenticator.issue(s, u.id, "initial", ttl_days or self.settings.token_ttl_days)
            audit(s, p, "user.create", "user", u.id, name=name, role=role)
        return {"user": self.user_json(u), "token": token, "token_id": tok.id, "expires_at": iso(tok.expires_at)}

    def list_users(self, p: Principal) -> list[dict]:
        require(p, "accounts.list", "only staff list accounts")
        email = can(p, "accounts.email")
        with self.db.read() as s:
            rows = [self.user_json(u) for u in s.scalars(select(UserRow).order_by(UserRow.created_at))]
        for r in rows:
            if not email:
                r.pop("email", None)
        return rows

    def update_user(self, p: Principal, user_id: str, role: str | None, active: bool | None) -> dict:
        require(p, "accounts.manage", "only admins change accounts")
        with self.db.session() as s:
            u = self._user_by(s, user_id)
            if u is None:
                raise NotFound(f"user {user_id!r} not found")
            if u.id == p.user_id and (active is False or (role is not None and role != "admin")):
                raise Conflict("admins cannot demote or deactivate themselves")
            changes = {}
            if role is not None and role != u.role:
                changes["role"] = [u.role, role]
                u.role = role
            if active is not None and active != u.active:
                changes["active"] = [u.active, active]
                u.active = active
            audit(s, p, "user.update", "user", u.id, **changes)
        self.auth.invalidate()
        return self.user_json(u)

    def create_token(self, p: Principal, name: str, ttl_days: float | None, user_id: str | None) -> dict:
        target = p.user_id
        if user_id is not None and user_id != p.user_id:
            require(p, "tokens.others", "only admins issue tokens for other users")
            target = user_id
        with self.db.session() as s:
            u = self._user_by(s, target)
            if u is None:
                raise NotFound(f"user {target!r} not found")
            live = s.scalar(select(func.count()).select_from(TokenRow).where(
                TokenRow.user_id == u.id, TokenRow.revoked_at.is_(None),
                (TokenRow.expires_at.is_(None)) | (TokenRow.expires_at > utcnow())))
            if live >= self.settings.max_tokens_per_account:
                raise Conflict(f"{u.name} has {live} live tokens, the most an account may have "
                               f"({self.settings.max_tokens_per_account}); revoke one first (DELETE /api/tokens/ID)")
            tok, token = Authenticator.issue(s, u.id, name, ttl_days or self.settings.token_ttl_days)
            audit(s, p, "token.create", "token", tok.id, user_id=u.id, name=name, expires_at=iso(tok.expires_at))
        return {**self.token_json(tok), "token": token}

    def list_tokens(self, p: Principal, all_users: bool = False) -> list[dict]:
        with self.db.read() as s:
            q = select(TokenRow).order_by(TokenRow.created_at)
            if not (all_users and can(p, "tokens.others")):
                q = q.where(TokenRow.user_id == p.user_id)
            return [self.token_json(t) for t in s.scalars(q)]

    def revoke_token(self, p: Principal, token_id: str) -> dict:
        with self.db.session() as s:
            t = s.get(TokenRow, token_id)
            if t is None or (t.user_id != p.user_id and not can(p, "tokens.others")):
                raise NotFound(f"token {token_id!r} not found")
            if t.revoked_at is None:
                t.revoked_at = utcnow()
                audit(s, p, "token.revoke", "token", t.id, user_id=t.user_id)
        self.auth.invalidate()
        return self.token_json(t)

    # ---------------------------------------------------------------- proposals
    def proposal_json(self, prop: ProposalRow, members: list[tuple[MemberRow, UserRow]] | None = None,
                      usage: tuple[int, float] | None = None) -> dict:
        d = {
            "id": prop.id, "title": prop.title, "abstract": prop.abstract, "kind": prop.kind,
            "coalition": prop.coalition, "pi_id": prop.pi_id, "status": prop.status,
            "instruments": prop.instruments,
            "allocation": {"experiments": prop.allocation_experiments, "hours": prop.allocation_hours},
            "dedicated": prop.dedicated, "embargo_until": iso(prop.embargo_until),
            "created_at": iso(prop.created_at), "decided_at": iso(prop.decided_at), "decided_by": prop.decided_by,
        }
        if members is not None:
            d["members"] = [{"user_id": u.id, "name": u.name, "role": m.role} for m, u in members]
        if usage is not None:
            d["usage"] = {"experiments": usage[0], "hours": usage[1]}
        return d

    def _members(self, s, pid: str) -> list[tuple[MemberRow, UserRow]]:
        return list(s.execute(select(MemberRow, UserRow).join(UserRow, UserRow.id == MemberRow.user_id)
                              .where(MemberRow.proposal_id == pid).order_by(MemberRow.added_at)).all())

    def _check_instruments(self, names: list[str], field: str = "instruments") -> None:
        from sdl.instruments import check_instrument_name

        for i, n in enumerate(names):
            try:
                check_instrument_name(n)
            except InvalidInput as exc:
                raise InvalidInput(f"{field}.{i}", exc.message, n) from None

    def create_proposal(self, p: Principal, body: Any) -> dict:
        self._check_instruments(body.instruments)
        with self.db.session() as s:
            prop = ProposalRow(
                id=new_id()[:16], title=body.title, abstract=body.abstract, kind=body.kind, coalition=body.coalition,
                pi_id=p.user_id, status="pending", instruments=list(dict.fromkeys(body.instruments)),
                allocation_experiments=body.allocation.experiments, allocation_hours=body.allocation.hours,
            )
            s.add(prop)
            s.flush()
            s.add(MemberRow(proposal_id=prop.id, user_id=p.user_id, role="pi"))
            added = []
            for i, key in enumerate(body.members):
                u = self._user_by(s, key)
                if u is None:
                    raise InvalidInput(f"members.{i}", "no such user", key)
                if u.id != p.user_id and u.id not in added:
                    s.add(MemberRow(proposal_id=prop.id, user_id=u.id, role="member"))
                    added.append(u.id)
            audit(s, p, "proposal.create", "proposal", prop.id, prop.id, title=prop.title, kind=prop.kind,
                  instruments=prop.instruments, members=added,
                  allocation=body.allocation.model_dump())
            s.flush()
            out = self.proposal_json(prop, self._members(s, prop.id))
        self.members.invalidate()
        return out

    def _proposal_for(self, s, p: Principal, pid: str, view: AccessView | None = None) -> ProposalRow:
        """The proposal if ``p`` may see it (member, admin, or readable); else 404."""
        prop = s.get(ProposalRow, pid)
        view = view or self.view(p)
        if prop is None or not (can(p, "proposals.all") or view.is_member(pid) or view.can_read_row(prop)):
            raise NotFound(f"proposal {pid!r} not found")
        return prop

    def list_proposals(self, p: Principal, status: str | None = None) -> list[dict]:
        view = self.view(p)
        with self.db.read() as s:
            q = select(ProposalRow).order_by(ProposalRow.created_at)
            if status:
                q = q.where(ProposalRow.status == status)
            props = [x for x in s.scalars(q)
                     if can(p, "proposals.all") or view.is_member(x.id) or view.can_read_row(x)]
            used = self.scheduler.usage(s, [x.id for x in props])
            return [self.proposal_json(x, usage=used.get(x.id)) for x in props]

    def get_proposal(self, p: Principal, pid: str) -> dict:
        with self.db.read() as s:
            prop = self._proposal_for(s, p, pid)
            members = self._members(s, pid)
            used = self.scheduler.usage(s, [pid]).get(pid)
            return self.proposal_json(prop, members, used)

    def decide_proposal(self, p: Principal, pid: str, decision: str, body: Any) -> dict:
        require(p, "proposals.decide", "only admins approve or reject proposals")
        with self.db.session() as s:
            prop = s.get(ProposalRow, pid)
            if prop is None:
                raise NotFound(f"proposal {pid!r} not found")
            detail: dict[str, Any] = {"comment": getattr(body, "comment", ""), "from": prop.status}
            if decision == "approve":
                if prop.status not in ("pending", "approved"):
                    raise Conflict(f"proposal is {prop.status}; only a pending one can be approved")
                if body.allocation is not None:
                    prop.allocation_experiments = body.allocation.experiments
                    prop.allocation_hours = body.allocation.hours
                    detail["allocation"] = body.allocation.model_dump()
                if body.dedicated is not None:
                    prop.dedicated = body.dedicated
                    detail["dedicated"] = body.dedicated
                if body.embargo_until is not None:
                    e = body.embargo_until
                    prop.embargo_until = e if e.tzinfo else e.replace(tzinfo=dt.timezone.utc)
                elif prop.embargo_until is None and prop.kind == "open":
                    prop.embargo_until = utcnow() + dt.timedelta(days=self.settings.embargo_days)
                detail["embargo_until"] = iso(prop.embargo_until)
                prop.status = "approved"
            elif decision == "reject":
                if prop.status != "pending":
                    raise Conflict(f"proposal is {prop.status}; only a pending one can be rejected")
                prop.status = "rejected"
            elif decision == "close":
                if prop.status != "approved":
                    raise Conflict(f"proposal is {prop.status}; only an approved one can be closed")
                prop.status = "closed"
            prop.decided_at, prop.decided_by = utcnow(), p.user_id
            audit(s, p, f"proposal.{decision}", "proposal", pid, pid, **detail)
            cancelled = []
            if decision == "close":
                cancelled = list(s.scalars(select(ItemRow).where(ItemRow.proposal_id == pid,
                                                                 ItemRow.status == "queued")))
                for it in cancelled:
                    it.status, it.error, it.finished_at = "cancelled", "proposal closed", utcnow()
                s.execute(update(ServiceCampaignRow).where(ServiceCampaignRow.proposal_id == pid,
                                                           ServiceCampaignRow.state.in_(("running", "paused",
                                                                                          "created")))
                          .values(state="stopped", message="proposal closed"))
            out = self.proposal_json(prop, self._members(s, pid))
        for it in cancelled:
            self.publish_item(it)
        self.scheduler.wake()
        self.members.invalidate()
        return out

    def add_member(self, p: Principal, pid: str, user: str, role: str) -> dict:
        view = self.view(p)
        with self.db.session() as s:
            prop = self._proposal_for(s, p, pid, view)
            _require(can(p, "proposals.members") or view.is_pi(pid),
                     "only the proposal's PI or an admin changes its members")
            u = self._user_by(s, user)
            if u is None:
                raise InvalidInput("user", "no such user", user)
            m = s.get(MemberRow, (pid, u.id))
            if m is None:
                s.add(MemberRow(proposal_id=pid, user_id=u.id, role=role))
            else:
                m.role = role
            audit(s, p, "proposal.add_member", "proposal", pid, pid, user_id=u.id, name=u.name, role=role)
            s.flush()
            out = self.proposal_json(prop, self._members(s, pid))
        self.members.invalidate()
        return out

    def remove_member(self, p: Principal, pid: str, user: str) -> dict:
        view = self.view(p)
        with self.db.session() as s:
            prop = self._proposal_for(s, p, pid, view)
            _require(can(p, "proposals.members") or view.is_pi(pid),
                     "only the proposal's PI or an admin changes its members")
            u = self._user_by(s, user)
            m = None if u is None else s.get(MemberRow, (pid, u.id))
            if m is None:
                raise NotFound(f"{user!r} is not a member of proposal {pid!r}")
            if m.role == "pi" and sum(1 for mm, _ in self._members(s, pid) if mm.role == "pi") == 1:
                raise Conflict("the last PI cannot be removed; make another member PI first")
            s.delete(m)
            audit(s, p, "proposal.remove_member", "proposal", pid, pid, user_id=u.id, name=u.name)
            s.flush()
            out = self.proposal_json(prop, self._members(s, pid))
        self.members.invalidate()
        return out

    def audit_log(self, p: Principal, proposal_id: str | None = None, limit: int = 200,
                  action: str | None = None) -> list[dict]:
        if proposal_id is None:
            require(p, "audit.all", "only admins read the whole audit log; members read their proposal's")
        view = self.view(p)
        with self.db.read() as s:
            if proposal_id is not None:
                self._proposal_for(s, p, proposal_id, view)
                _require(can(p, "audit.all") or view.is_member(proposal_id), "members only")
            q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
            if proposal_id is not None:
                q = q.where(AuditRow.proposal_id == proposal_id)
            if action:
                q = q.where(AuditRow.action == action)
            return [{"id": a.id, "at": iso(a.at), "actor": a.actor, "actor_id": a.actor_id, "action": a.action,
                     "target_type": a.target_type, "target_id": a.target_id, "proposal_id": a.proposal_id,
                     # what a proposal's members did is its data: staff see that it happened, not the values
                     "detail": a.detail if a.proposal_id is None or view.can_read(a.proposal_id)
                     else redact_audit_detail(a.detail)} for a in s.scalars(q)]

    # -------------------------------------------------------------- instruments
    def worker(self, name: str):
        w = self.workers.get(name)
        if w is None:
            raise NotFound(f"unknown instrument {name!r}; served here: {sorted(self.workers)}")
        return w

    def instrument_json(self, name: str, base_url: str = "/api", p: Principal | None = None) -> dict:
        w = self.worker(name)
        inst = w.instrument
        status = w.describe()
        pid = status.get("current_proposal")
        if p is not None and pid is not None and not (can(p, "instruments.current") or self.view(p).can_read(pid)):
            status["current_proposal"] = None  # who runs where is the proposal's business
        with self.db.read() as s:
            counts = dict(s.execute(select(ItemRow.status, func.count()).where(ItemRow.instrument == name,
                                                                               ItemRow.status.in_(("queued",
                                                                                                   "running")))
                                    .group_by(ItemRow.status)).all())
        return {
            "name": name,
            "description": inst.description,
            "status": status,
            "queue_length": int(counts.get("queued", 0)),
            "dedicated_fraction": self.scheduler.dedicated_fraction.get(name, 0.0),
            "objectives": [o.model_dump() for o in inst.objectives],
            "space": inst.space.model_dump(exclude={"pool"}),
            "pool_size": None if inst.space.pool is None else len(inst.space.pool),
            "plans": {pname: inst.plan_schema(pname, base_url) for pname in inst.plan_names},
            "source": getattr(inst, "source", ""),
        }

    def instrument_pool(self, name: str) -> list[dict]:
        inst = self.worker(name).instrument
        if inst.space.pool is None:
            raise NotFound(f"instrument {name!r} has no candidate pool: any point within the limits can be made")
        return list(inst.space.pool)

    def plan_schema(self, name: str, plan: str, base_url: str = "/api") -> dict:
        w = self.worker(name)
        if plan not in w.instrument.plan_names:
            raise NotFound(f"unknown plan {plan!r}; {name} accepts {w.instrument.plan_names}")
        return w.instrument.plan_schema(plan, base_url)

    def control_instrument(self, p: Principal, name: str, action: str, reason: str = "",
                           immediate: bool = True) -> dict:
        require(p, "instruments.control", "only beamline scientists and admins pause, resume or abort instruments")
        w = self.worker(name)
        aborted = None
        if action == "pause":
            self.dispatcher.set_paused(name, True, immediate)  # no claim in flight anywhere once it returns
            w.pause(immediate)
        elif action == "resume":
            self.dispatcher.set_paused(name, False)
            w.resume()
        elif action == "abort":
            aborted = w.abort_current(reason or f"aborted by {p.name}")
        with self.db.session() as s:
            audit(s, p, f"instrument.{action}", "instrument", name, None, reason=reason, immediate=immediate,
                  item_id=aborted)
        return {"instrument": name, "status": w.describe(), "aborted_item": aborted}

    def set_share(self, p: Principal, name: str, fraction: float) -> dict:
        require(p, "instruments.share", "only admins set the dedicated fraction")
        self.worker(name)
        old = self.scheduler.dedicated_fraction.get(name, 0.0)
        self.scheduler.set_dedicated_fraction(name, fraction)  # stored: every worker process uses it
        with self.db.session() as s:
            audit(s, p, "instrument.share", "instrument", name, None, dedicated_fraction=[old, fraction])
        return {"instrument": name, "dedicated_fraction": fraction}

    def queue(self, p: Principal, name: str, limit: int = 200) -> list[dict]:
        self.worker(name)
        view = self.view(p)
        out = []
        with self.db.read() as s:
            running = list(s.scalars(select(ItemRow).where(ItemRow.instrument == name, ItemRow.status == "running")))
        for it in running:
            out.append(self.item_json(it, view, p, position=0))
        for i, (it, blocked) in enumerate(self.scheduler.predicted_order(name, limit)):
            d = self.item_json(it, view, p, position=i + 1)
            d["blocked"] = blocked
            out.append(d)
        return out

    # -------------------------------------------------------------- experiments
    def item_json(self, it: ItemRow, view: AccessView | None, p: Principal | None, **extra: Any) -> dict:
        full = view is None or view.can_read(it.proposal_id)
        d: dict[str, Any] = {"id": it.id, "kind": it.kind, "instrument": it.instrument, "status": it.status,
                             "created_at": iso(it.created_at), "started_at": iso(it.started_at),
                             "finished_at": iso(it.finished_at), **extra}
        if full:
            d.update({"plan": it.plan, "parameters": it.params, "proposal_id": it.proposal_id,
                      "user_id": it.user_id, "priority": it.priority, "note": it.note,
                      "campaign_id": it.campaign_id, "suggestion_id": it.suggestion_id, "run_uid": it.run_uid,
                      "result": it.result, "error": it.error, "attempts": it.attempts})
        else:
            d["redacted"] = True
            if p is not None and can(p, "queue.proposals"):
                d["proposal_id"] = it.proposal_id
        return d

    def _check_can_run(self, s, p: Principal, pid: str, instrument: str, view: AccessView) -> ProposalRow:
        prop = s.get(ProposalRow, pid)
        if prop is None or not view.is_member(pid):
            raise NotFound(f"proposal {pid!r} not found (or you are not a member)")
        if prop.status != "approved":
            raise Conflict(f"proposal {pid} is {prop.status}: an admin must approve it before anything runs")
        if instrument not in prop.instruments:
            raise Forbidden(f"proposal {pid} does not include instrument {instrument!r}; it has {prop.instruments}")
        spent = self.allocation_spent(s, prop)
        if spent:
            raise Conflict(spent)
        return prop

    def allocation_spent(self, s, prop: ProposalRow) -> str | None:
        """Why ``prop`` may not queue one more experiment (not approved, allocation used), or None.
        The one check for direct submissions and campaign steps alike."""
        pid = prop.id
        if prop.status != "approved":
            return f"proposal {pid} is {prop.status}: an admin must approve it before anything runs"
        if prop.allocation_experiments is None and prop.allocation_hours is None:
            return None
        n, hours = self.scheduler.usage(s, [pid])[pid]
        if prop.allocation_experiments is not None and n >= prop.allocation_experiments:
            return f"proposal {pid} has used its allocation of {prop.allocation_experiments} experiments"
        if prop.allocation_hours is not None and hours >= prop.allocation_hours:
            return f"proposal {pid} has used its allocation of {prop.allocation_hours:g} hours"
        return None

    def new_item(self, s, **fields: Any) -> ItemRow:
        it = ItemRow(id=new_id(), status="queued", **fields)
        s.add(it)
        s.flush()
        return it

    def submit(self, p: Principal, body: Any) -> dict:
        w = self.worker(body.instrument)
        body.plan = body.plan or w.instrument.default_plan
        if body.plan not in w.instrument.plan_names:
            raise NotFound(f"unknown plan {body.plan!r}; {body.instrument} accepts {w.instrument.plan_names}")
        try:
            params = w.instrument.validate_request(body.plan, body.parameters)
        except InvalidInput as exc:
            field = exc.field if exc.field.startswith("parameters") else f"parameters.{exc.field}"
            raise InvalidInput(field, exc.message, exc.value) from None
        view = self.view(p)
        with self.db.session() as s:
            self._check_can_run(s, p, body.proposal_id, body.instrument, view)
            it = self.new_item(s, kind="experiment", instrument=body.instrument, plan=body.plan, params=params,
                               proposal_id=body.proposal_id, user_id=p.user_id, priority=body.priority,
                               note=body.note)
            audit(s, p, "experiment.submit", "experiment", it.id, body.proposal_id, instrument=body.instrument,
                  plan=body.plan, parameters=params, priority=body.priority)
        self.item_queued(it)
        return self.item_json(it, None, p)

    def list_items(self, p: Principal, *, proposal_id: str | None = None, instrument: str | None = None,
                   status: str | None = None, campaign_id: str | None = None, limit: int = 100,
                   offset: int = 0) -> list[dict]:
        view = self.view(p)
        readable = view.readable_ids()
        with self.db.read() as s:
            q = select(ItemRow).where(ItemRow.proposal_id.in_(readable)).order_by(ItemRow.created_at.desc(),
                                                                                  ItemRow.id)
            if proposal_id:
                q = q.where(ItemRow.proposal_id == proposal_id)
            if instrument:
                q = q.where(ItemRow.instrument == instrument)
            if status:
                q = q.where(ItemRow.status == status)
            if campaign_id:
                q = q.where(ItemRow.campaign_id == campaign_id)
            rows = list(s.scalars(q.offset(offset).limit(limit)))
        return [self.item_json(it, None, p) for it in rows]

    def _item_for(self, s, p: Principal, item_id: str, view: AccessView, staff_ok: bool = False) -> ItemRow:
        it = s.get(ItemRow, item_id)
        if it is None or not (view.can_read(it.proposal_id) or (staff_ok and can(p, "experiments.stop"))):
            raise NotFound(f"experiment {item_id!r} not found")
        return it

    def get_item(self, p: Principal, item_id: str) -> dict:
        view = self.view(p)
        with self.db.read() as s:
            it = self._item_for(s, p, item_id, view)
        return self.item_json(it, None, p)

    def cancel_item(self, p: Principal, item_id: str, reason: str = "") -> dict:
        view = self.view(p)
        with self.db.session() as s:
            it = self._item_for(s, p, item_id, view, staff_ok=True)
            _require(view.is_member(it.proposal_id) or can(p, "experiments.stop"),
                     "only the proposal's members or staff cancel")
            if it.kind == "campaign" and it.suggestion_id and it.status == "queued":
                cid, sid = it.campaign_id, it.suggestion_id
            else:
                cid = sid = None
                if it.status != "queued":
                    raise Conflict(f"experiment is {it.status}; only a queued one can be cancelled"
                                   + ("; abort it instead" if it.status == "running" else ""))
                n = s.execute(update(ItemRow).where(ItemRow.id == item_id, ItemRow.status == "queued")
                              .values(status="cancelled", finished_at=utcnow(),
                                      error=f"cancelled by {p.name}" + (f": {reason}" if reason else ""))).rowcount
                if n != 1:
                    raise Conflict("the experiment started meanwhile; abort it instead")
                audit(s, p, "experiment.cancel", "experiment", item_id, it.proposal_id, reason=reason)
        if sid is not None:
            self.campaigns.veto(p, cid, sid, reason or "cancelled")
        with self.db.session() as s:
            it = s.get(ItemRow, item_id)
        self.publish_item(it)
        return self.item_json(it, view, p)

    def abort_item(self, p: Principal, item_id: str, reason: str = "") -> dict:
        view = self.view(p)
        with self.db.read() as s:
            it = self._item_for(s, p, item_id, view, staff_ok=True)
        _require(can(p, "experiments.stop") or view.is_member(it.proposal_id),
                 "only staff or the proposal's members abort")
        if it.status == "queued":
            return self.cancel_item(p, item_id, reason)
        if it.status != "running":
            raise Conflict(f"experiment is {it.status}; nothing to abort")
        w = self.worker(it.instrument)
        if not w.abort(item_id, reason or f"aborted by {p.name}"):
            raise Conflict("the experiment is not running on this instrument's worker (finished meanwhile?)")
        with self.db.session() as s:
            audit(s, p, "experiment.abort", "experiment", item_id, it.proposal_id, reason=reason)
        deadline = time.monotonic() + 10 + (self.settings.heartbeat_s if w.external else 0.0)
        while time.monotonic() < deadline:
            with self.db.read() as s:
                it = s.get(ItemRow, item_id)
            if it.status in ITEM_FINAL:
                break
            time.sleep(0.02)
        return self.item_json(it, view, p)

    # ------------------------------------------------------- worker callbacks
    @staticmethod
    def _item_event(it: ItemRow) -> dict:
        from sdl.service.relay import item_event

        return item_event(it)

    def publish_item(self, it: ItemRow) -> None:
        self.bus.publish(self._item_event(it), proposal_id=it.proposal_id)

    def item_queued(self, it: ItemRow) -> None:
        self.publish_item(it)
        self.scheduler.wake()
        try:
            self.dispatcher.notify_queued(it.instrument)
        except Exception as exc:  # noqa: BLE001 - the workers poll as well
            log.info("wake %s: %s", it.instrument, exc)

    # the worker host interface (sdl.service.workers.InstrumentWorker)
    def publish(self, data: dict, proposal_id: str | None, *, relayed: bool) -> None:
        """An embedded worker's event: onto this bus; to the other replicas unless it was
        already sent in the transaction that wrote it."""
        self.bus.publish(data, proposal_id, relay=not relayed)

    def wait(self, timeout: float) -> None:
        self.scheduler.wait(timeout)

    def wake(self) -> None:
        self.scheduler.wake()

    def item_finished(self, it: ItemRow) -> None:
        self.scheduler.wake()
        if it.kind == "campaign":
            self.campaigns.wake()

    # ---------------------------------------------------------------- campaigns
    def _campaign_for(self, s, p: Principal, cid: str, view: AccessView, control: bool = False
                      ) -> ServiceCampaignRow:
        row = s.get(ServiceCampaignRow, cid)
        if row is None:
            raise NotFound(f"campaign {cid!r} not found")
        readable = view.can_read(row.proposal_id)
        if control:
            if not (view.is_member(row.proposal_id) or can(p, "campaigns.halt")):
                raise NotFound(f"campaign {cid!r} not found")
        elif not readable:
            raise NotFound(f"campaign {cid!r} not found")
        return row

    def create_campaign(self, p: Principal, body: Any) -> dict:
        spec: CampaignSpec = body.spec
        w = self.worker(spec.instrument)
        inst = w.instrument
        if spec.instrument_options:
            raise InvalidInput("spec.instrument_options", "not taken by the service: the facility configures "
                               "its instruments", spec.instrument_options)
        if spec.space is not None:
            self._check_space_within(spec.space, inst.space)
        if spec.objectives is not None:
            known = [o.name for o in inst.objectives]
            for i, o in enumerate(spec.objectives):
                if o.name not in known:
                    raise InvalidInput(f"spec.objectives.{i}.name", f"{spec.instrument} measures {known}", o.name)
        view = self.view(p)
        with self.db.session() as s:
            self._check_can_run(s, p, body.proposal_id, spec.instrument, view)
        spec = spec.model_copy(update={"proposal": body.proposal_id, "time_scale": w.time_scale})
        cid = create_campaign(self.store, spec)
        with self.db.session() as s:
            s.add(ServiceCampaignRow(campaign_id=cid, proposal_id=body.proposal_id, owner_id=p.user_id,
                                     instrument=spec.instrument, state="created", priority=body.priority))
            audit(s, p, "campaign.create", "campaign", cid, body.proposal_id, spec=spec.model_dump(mode="json"))
        if body.start:
            self.campaign_action(p, cid, "start")
        return self.campaign_json(p, cid)

    @staticmethod
    def _check_space_within(space: Any, limits: Any) -> None:
        names = limits.names
        for i, prm in enumerate(space.parameters):
            if prm.name not in names:
                raise InvalidInput(f"spec.space.parameters.{i}.name", f"not a parameter of the instrument; "
                                   f"allowed: {names}", prm.name)
            lim = limits.parameter(prm.name)
            values = [prm.value] if isinstance(prm, FixedParameter) else \
                list(prm.values) if isinstance(prm, ChoiceParameter) else []
            for j, v in enumerate(values):  # every value the campaign could ask for, within the limits
                field = f"spec.space.parameters.{i}." + ("value" if isinstance(prm, FixedParameter) else f"values.{j}")
                try:
                    lim.check(v)
                except InvalidInput as exc:
                    raise InvalidInput(field, f"outside the instrument's limits: {exc.message}", v) from None
            if isinstance(prm, RangeParameter) and not isinstance(lim, RangeParameter):
                raise InvalidInput(f"spec.space.parameters.{i}.kind", f"the instrument takes {prm.name} as "
                                   f"{lim.kind}, not a range", prm.kind)
            if isinstance(prm, RangeParameter) and isinstance(lim, RangeParameter):
                if prm.lower < lim.lower:
                    raise InvalidInput(f"spec.space.parameters.{i}.lower", f"below the instrument's limit "
                                       f"{lim.lower} {lim.units}".rstrip(), prm.lower)
                if prm.upper > lim.upper:
                    raise InvalidInput(f"spec.space.parameters.{i}.upper", f"above the instrument's limit "
                                       f"{lim.upper} {lim.units}".rstrip(), prm.upper)
        missing = [n for n in names if n not in space.names]
        if missing:
            raise InvalidInput("spec.space.parameters", f"every instrument parameter is needed; missing {missing} "
                               "(use a fixed parameter to hold one)")
        if limits.pool is not None and space.pool is None:
            space.pool = limits.pool

    def campaign_action(self, p: Principal, cid: str, action: str, reason: str = "") -> dict:
        view = self.view(p)
        with self.db.session() as s:
            row = s.get(ServiceCampaignRow, cid)
            # decided once, before anything changes: members may do everything; staff may halt
            # (pause, stop) any campaign and are answered without its data
            readable = row is not None and view.can_read(row.proposal_id)
            if row is None or not (view.is_member(row.proposal_id)
                                   or (action in ("pause", "stop") and can(p, "campaigns.halt"))):
                if readable:  # may see it, may not steer it
                    raise Forbidden(f"only the proposal's members {action} its campaigns")
                raise NotFound(f"campaign {cid!r} not found")
            state = row.state
            allowed = {"start": ("created", "stopped"), "pause": ("running",), "resume": ("paused",),
                       "stop": ("created", "running", "paused")}[action]
            if state not in allowed:
                raise Conflict(f"campaign is {state}; {action} needs it {' or '.join(allowed)}")
            if action in ("start", "resume"):
                prop = s.get(ProposalRow, row.proposal_id)
                if prop is None or prop.status != "approved":
                    raise Conflict(f"proposal is {prop.status if prop else 'gone'}: it must be approved to run")
            new = {"start": "running", "resume": "running", "pause": "paused", "stop": "stopped"}[action]
            row.state, row.message = new, reason or f"{action} by {p.name}"
            withdrawn = []
            if action in ("pause", "stop"):
                withdrawn = list(s.scalars(select(ItemRow).where(ItemRow.campaign_id == cid,
                                                                 ItemRow.status == "queued")))
                for it in withdrawn:
                    it.status, it.finished_at = "cancelled", utcnow()
                    it.error = f"withdrawn: campaign {new}"
            audit(s, p, f"campaign.{action}", "campaign", cid, row.proposal_id, reason=reason)
            pid = row.proposal_id
        self.store.set_campaign_status(cid, {"running": "running", "paused": "paused",
                                             "stopped": "stopped"}[new], row.message)
        if action == "start" and row.instrument in self.workers:
            self.campaigns.session(cid, create=True)
        if action == "stop":
            self.campaigns.drop(cid)
        for it in withdrawn:
            self.publish_item(it)
        self.bus.publish({"type": "campaign", "event": "state", "campaign_id": cid, "state": new,
                          "message": row.message}, proposal_id=pid)
        self.campaigns.wake()
        if not readable:
            return {"id": cid, "state": new, "proposal_id": pid, "instrument": row.instrument, "redacted": True}
        return self.campaign_json(p, cid)

    def set_campaign_state(self, cid: str, state: str, message: str) -> None:
        with self.db.session() as s:
            row = s.get(ServiceCampaignRow, cid)
            if row is None:
                return
            row.state, row.message = state, message
            audit(s, SYSTEM, f"campaign.{state}", "campaign", cid, row.proposal_id, message=message)
            pid = row.proposal_id
        self.store.set_campaign_status(cid, state, message)
        if state in ("completed", "failed", "stopped"):
            self.campaigns.drop(cid)
        self.bus.publish({"type": "campaign", "event": "state", "campaign_id": cid, "state": state,
                          "message": message}, proposal_id=pid)

    def _objectives(self, spec: CampaignSpec):
        if spec.objectives:
            return spec.objectives
        w = self.workers.get(spec.instrument)
        if w is not None:
            return w.instrument.objectives
        from sdl.instruments import make_instrument

        return make_instrument(spec.instrument).objectives

    def campaign_json(self, p: Principal, cid: str, detail: bool = False) -> dict:
        view = self.view(p)
        with self.db.read() as s:
            row = self._campaign_for(s, p, cid, view)
        crow: CampaignRow = self.store.campaign(cid)
        spec = CampaignSpec.model_validate(crow.spec)
        objective = self._objectives(spec)[0]
        obs = self.store.observations(cid)
        trace = best_trace(obs, objective)
        best = None
        ok = [o for o in obs if o.ok and o.values.get(objective.name) is not None
              and math.isfinite(o.values[objective.name])]
        if ok:
            b = max(ok, key=lambda o: objective.sign * o.values[objective.name])
            best = {"value": b.values[objective.name], "params": b.params, "run_uid": b.run_uid,
                    "suggestion_id": b.suggestion_id}
        out: dict[str, Any] = {
            "id": cid, "name": crow.name, "state": row.state, "message": row.message,
            "proposal_id": row.proposal_id, "owner_id": row.owner_id, "instrument": row.instrument,
            "priority": row.priority, "agent": spec.agent, "budget": spec.budget, "experiments": len(obs),
            "failed": sum(1 for o in obs if not o.ok), "objective": objective.model_dump(), "best": best,
            "best_trace": trace, "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
        }
        if detail:
            out["spec"] = crow.spec
            out["suggestions"] = self._suggestions(cid)
            out["observations"] = self._observations(cid)
            with self.db.read() as s:
                active = list(s.scalars(select(ItemRow).where(ItemRow.campaign_id == cid,
                                                              ItemRow.status.in_(("queued", "running")))))
            out["queue"] = [self.item_json(it, None, p) for it in active]
        return jsonable(out)

    def list_campaigns(self, p: Principal, proposal_id: str | None = None) -> list[dict]:
        readable = self.view(p).readable_ids()
        with self.db.read() as s:
            q = select(ServiceCampaignRow.campaign_id).where(ServiceCampaignRow.proposal_id.in_(readable))
            if proposal_id:
                q = q.where(ServiceCampaignRow.proposal_id == proposal_id)
            ids = list(s.scalars(q.order_by(ServiceCampaignRow.created_at)))
        return [self.campaign_json(p, cid) for cid in ids]

    def _suggestions(self, cid: str) -> list[dict]:
        return [{"id": r.id, "seq": r.seq, "params": r.params, "provenance": r.provenance, "status": r.status,
                 "attempts": r.attempts, "created_at": iso(r.created_at)} for r in self.store.suggestions(cid)]

    def _observations(self, cid: str) -> list[dict]:
        return [{"suggestion_id": o.suggestion_id, "params": o.params, "values": o.values, "ok": o.ok,
                 "run_uid": o.run_uid, "error": o.extra.get("error")} for o in self.store.observations(cid)]

    def campaign_suggestions(self, p: Principal, cid: str) -> list[dict]:
        self._campaign_readable(p, cid)
        return jsonable(self._suggestions(cid))

    def campaign_observations(self, p: Principal, cid: str) -> list[dict]:
        self._campaign_readable(p, cid)
        return jsonable(self._observations(cid))

    def _campaign_readable(self, p: Principal, cid: str, control: bool = False) -> ServiceCampaignRow:
        view = self.view(p)
        with self.db.read() as s:
            return self._campaign_for(s, p, cid, view, control=control)

    def add_point(self, p: Principal, cid: str, params: dict, reason: str) -> dict:
        view = self.view(p)
        with self.db.read() as s:
            row = self._campaign_for(s, p, cid, view)
        _require(view.is_member(row.proposal_id), "only the proposal's members add points")
        try:
            sug = self.campaigns.add_point(p, cid, params, reason)
        except InvalidInput as exc:
            field = exc.field if exc.field.startswith("parameters") else f"parameters.{exc.field}"
            raise InvalidInput(field, exc.message, exc.value) from None
        return {"id": sug.id, "params": sug.params, "provenance": sug.provenance.model_dump(), "status": "pending"}

    def veto(self, p: Principal, cid: str, sid: str, reason: str) -> dict:
        view = self.view(p)
        with self.db.read() as s:
            row = self._campaign_for(s, p, cid, view)
        _require(view.is_member(row.proposal_id), "only the proposal's members veto suggestions")
        return self.campaigns.veto(p, cid, sid, reason)

    # --------------------------------------------------------------------- data
    def table(self, p: Principal, cid: str) -> tuple[list[str], list[dict]]:
        """The campaign as one row per suggestion: parameters, values, status, provenance."""
        self._campaign_readable(p, cid)
        obs = {o.suggestion_id: o for o in self.store.observations(cid)}
        rows = []
        pnames: list[str] = []
        vnames: list[str] = []
        for r in self.store.suggestions(cid):
            o = obs.get(r.id)
            for k in r.params:
                if k not in pnames:
                    pnames.append(k)
            if o is not None:
                for k in o.values:
                    if k not in vnames:
                        vnames.append(k)
            prov = r.provenance or {}
            rows.append({
                "seq": r.seq, "suggestion_id": r.id, "status": r.status, **r.params,
                **({} if o is None else o.values),
                "ok": None if o is None else o.ok, "run_uid": None if o is None else o.run_uid,
                "agent": prov.get("agent"), "acquisition": prov.get("acquisition"),
                "acquisition_value": prov.get("acquisition_value"), "reason": prov.get("reason"),
                "error": None if o is None else o.extra.get("error"),
            })
        cols = ["seq", "suggestion_id", "status", *pnames, *vnames, "ok", "run_uid", "agent", "acquisition",
                "acquisition_value", "reason", "error"]
        return cols, jsonable(rows)

    @staticmethod
    def to_csv(cols: list[str], rows: Iterable[dict]) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: csv_cell(r.get(k)) for k in cols})
        return buf.getvalue()

    def _run_proposal(self, uid: str) -> str | None:
        with self.db.read() as s:
            pid = s.scalar(select(ItemRow.proposal_id).where(ItemRow.run_uid == uid).limit(1))
            if pid is not None:
                return pid
        with self.store.session() as s:
            run = s.get(RunRow, uid)
            cid = None if run is None else run.campaign_id
        if cid is None:
            return None
        with self.db.read() as s:
            row = s.get(ServiceCampaignRow, cid)
            return None if row is None else row.proposal_id

    def run_json(self, p: Principal, uid: str, documents: bool = True) -> dict:
        pid = self._run_proposal(uid)
        with self.store.session() as s:
            run = s.get(RunRow, uid)
        if run is None or not self.view(p).can_read(pid):
            raise NotFound(f"run {uid!r} not found")
        out = {"uid": run.uid, "status": run.status, "reason": run.reason, "campaign_id": run.campaign_id,
               "proposal_id": pid, "started_at": iso(run.started_at), "finished_at": iso(run.finished_at)}
        if documents:
            out["documents"] = [{"name": n, "doc": d} for n, d in self.store.documents(uid)]
        return out

    def item_documents(self, p: Principal, item_id: str) -> list[dict]:
        view = self.view(p)
        with self.db.read() as s:
            it = self._item_for(s, p, item_id, view)
        if not it.run_uid:
            return []
        return [{"name": n, "doc": d} for n, d in self.store.documents(it.run_uid)]

    def campaign_export(self, p: Principal, cid: str) -> dict:
        c = self.campaign_json(p, cid, detail=True)
        runs = []
        for r in self.store.runs(cid):
            runs.append({"uid": r.uid, "status": r.status, "reason": r.reason, "suggestion_id": r.suggestion_id,
                         "started_at": iso(r.started_at), "finished_at": iso(r.finished_at),
                         "documents": [{"name": n, "doc": d} for n, d in self.store.documents(r.uid)]})
        c["runs"] = runs
        c["exported_at"] = utcnow().isoformat()
        c["exported_by"] = p.name
        return c

    # ------------------------------------------------------------------- usage
    def usage_report(self, p: Principal, proposal_id: str | None = None, since: dt.datetime | None = None
                     ) -> list[dict]:
        """Instrument time and experiments per proposal and instrument."""
        view = self.view(p)
        with self.db.read() as s:
            q = select(UsageRow.proposal_id, UsageRow.instrument, func.count(), func.sum(UsageRow.seconds),
                       func.sum(case((UsageRow.status == "done", 1), else_=0))
                       ).group_by(UsageRow.proposal_id, UsageRow.instrument)
            if since is not None:
                q = q.where(UsageRow.started_at >= since)
            if proposal_id:
                q = q.where(UsageRow.proposal_id == proposal_id)
            rows = s.execute(q).all()
            props = {x.id: x for x in s.scalars(select(ProposalRow))}
        out = []
        for pid, inst, n, secs, n_done in rows:
            if not (can(p, "usage.all") or view.is_member(pid)):
                continue
            prop = props.get(pid)
            out.append({
                "proposal_id": pid, "title": prop.title if prop else None,
                "dedicated": bool(prop and prop.dedicated), "instrument": inst, "experiments": int(n),
                "succeeded": int(n_done or 0), "seconds": round(float(secs or 0.0), 3),
                "hours": round(float(secs or 0.0) / 3600.0, 6),
                "allocation_experiments": prop.allocation_experiments if prop else None,
                "allocation_hours": prop.allocation_hours if prop else None,
            })
        out.sort(key=lambda r: (r["proposal_id"], r["instrument"]))
        return out

    def share_report(self) -> dict:
        """Dedicated vs shared instrument time per instrument (from the meter)."""
        with self.db.read() as s:
            rows = s.execute(select(UsageRow.instrument, UsageRow.dedicated, func.sum(UsageRow.seconds), func.count())
                             .group_by(UsageRow.instrument, UsageRow.dedicated)).all()
        out: dict[str, dict] = {}
        for inst, ded, secs, n in rows:
            d = out.setdefault(inst, {"dedicated_seconds": 0.0, "shared_seconds": 0.0, "dedicated_experiments": 0,
                                      "shared_experiments": 0,
                                      "dedicated_fraction_target": self.scheduler.dedicated_fraction.get(inst, 0.0)})
            key = "dedicated" if ded else "shared"
            d[f"{key}_seconds"] += float(secs or 0.0)
            d[f"{key}_experiments"] += int(n)
        return out


class ExternalInstrument:
    """An instrument served by ``sdl worker`` processes. The service holds its description
    (space, objectives, plans: what requests are checked against) but no RunEngine; its
    state is what its workers last reported to the store, and control (pause, resume,
    abort) goes through the store, taken up by the worker at its next heartbeat."""

    external = True
    RE = None
    current = None

    def __init__(self, svc: LabService, cfg: Any):
        from sdl.instruments import make_instrument
        from sdl.service.workers import ServiceInstrument

        self.svc = svc
        self.name = cfg.name
        self.cfg = cfg
        ts = svc.settings.time_scale if cfg.time_scale is None else cfg.time_scale
        seed = svc.settings.seed if cfg.seed is None else cfg.seed
        self.time_scale = ts
        self.instrument = ServiceInstrument(make_instrument(cfg.name, seed=seed, time_scale=ts, n_slots=1), 1)

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def _live_workers(self) -> list:
        horizon = utcnow() - dt.timedelta(seconds=max(3 * self.svc.settings.heartbeat_s,
                                                      self.svc.settings.lease_timeout_s))
        from sdl.service.db import as_utc

        return [w for w in self.svc.dispatcher.workers(self.name)
                if as_utc(w.seen_at) >= horizon and w.state != "stopped"]

    @property
    def state(self) -> str:
        states = [w.state for w in self._live_workers()]
        for s in ("running", "paused", "idle", "starting"):
            if s in states:
                return s
        return "offline"

    @property
    def paused(self) -> bool:
        row = self.svc.dispatcher.instrument_state(self.name)
        return bool(row and row.paused)

    def describe(self) -> dict[str, Any]:
        live = self._live_workers()
        running = [w for w in live if w.item_id]
        cur = running[0].item_id if running else None
        prop = None
        if cur is not None:
            with self.svc.db.read() as s:
                prop = s.scalar(select(ItemRow.proposal_id).where(ItemRow.id == cur))
        return {"state": self.state, "paused": self.paused, "time_scale": self.time_scale,
                "current_item": cur, "current_proposal": prop, "worker": live[0].id if live else None,
                "external": True, "devices": live[0].devices if live else {},
                "workers": [{"id": w.id, "state": w.state, "item": w.item_id, "devices": w.devices,
                             "seen_at": iso(w.seen_at)} for w in live], "error": ""}

    def pause(self, immediate: bool = True) -> None:
        pass  # the stored flag (set by the service) is what the workers follow

    def resume(self) -> None:
        pass

    def abort(self, item_id: str | None, reason: str) -> bool:
        if item_id is None:
            return self.abort_current(reason) is not None
        return self.svc.dispatcher.request_abort(item_id, reason)

    def abort_current(self, reason: str) -> str | None:
        with self.svc.db.read() as s:
            ids = list(s.scalars(select(ItemRow.id).where(ItemRow.instrument == self.name,
                                                          ItemRow.status == "running")))
        for i in ids:
            self.svc.dispatcher.request_abort(i, reason)
        return ids[0] if ids else None
