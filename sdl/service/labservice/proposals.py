"""Proposals: create, review (approve/reject/close), members and the audit log
(router: :mod:`sdl.service.routers.proposals`).

A part of :class:`sdl.service.service.LabService` (a mixin): its methods use the
service's state (``db``, ``store``, ``workers``, ``scheduler``...) set up there."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from sqlalchemy import select, update

from sdl.errors import InvalidInput
from sdl.models import new_id
from sdl.service.access import AccessView
from sdl.service.auth import Principal
from sdl.service.authz import can, redact_audit_detail, require
from sdl.service.db import AuditRow, ItemRow, MemberRow, ProposalRow, ServiceCampaignRow, UserRow, audit, iso
from sdl.service.errors import Conflict, NotFound
from sdl.service.labservice.common import _require
from sdl.store import utcnow


class ProposalsMixin:
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

    def _change_members(self, p: Principal, pid: str, change: Callable[[Any], None]) -> dict:
        """Apply ``change(session)`` to a proposal's members (its PI or an admin only);
        return the proposal as it is after the change."""
        view = self.view(p)
        with self.db.session() as s:
            prop = self._proposal_for(s, p, pid, view)
            _require(can(p, "proposals.members") or view.is_pi(pid),
                     "only the proposal's PI or an admin changes its members")
            change(s)
            s.flush()
            out = self.proposal_json(prop, self._members(s, pid))
        self.members.invalidate()
        return out

    def add_member(self, p: Principal, pid: str, user: str, role: str) -> dict:
        def add(s) -> None:
            u = self._user_by(s, user)
            if u is None:
                raise InvalidInput("user", "no such user", user)
            m = s.get(MemberRow, (pid, u.id))
            if m is None:
                s.add(MemberRow(proposal_id=pid, user_id=u.id, role=role))
            else:
                m.role = role
            audit(s, p, "proposal.add_member", "proposal", pid, pid, user_id=u.id, name=u.name, role=role)

        return self._change_members(p, pid, add)

    def remove_member(self, p: Principal, pid: str, user: str) -> dict:
        def remove(s) -> None:
            u = self._user_by(s, user)
            m = None if u is None else s.get(MemberRow, (pid, u.id))
            if m is None:
                raise NotFound(f"{user!r} is not a member of proposal {pid!r}")
            if m.role == "pi" and sum(1 for mm, _ in self._members(s, pid) if mm.role == "pi") == 1:
                raise Conflict("the last PI cannot be removed; make another member PI first")
            s.delete(m)
            audit(s, p, "proposal.remove_member", "proposal", pid, pid, user_id=u.id, name=u.name)

        return self._change_members(p, pid, remove)

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
