"""Experiments (queue items): submit, list, read, cancel, abort, and the allocation
check (router: :mod:`sdl.service.routers.experiments`).

A part of :class:`sdl.service.service.LabService` (a mixin): its methods use the
service's state (``db``, ``store``, ``workers``, ``scheduler``...) set up there."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select, update

from sdl.errors import InvalidInput
from sdl.models import new_id
from sdl.service.access import AccessView
from sdl.service.auth import Principal
from sdl.service.authz import can
from sdl.service.db import ITEM_FINAL, ItemRow, ProposalRow, audit, iso
from sdl.service.errors import Conflict, Forbidden, NotFound
from sdl.service.labservice.common import _require
from sdl.store import utcnow


class ExperimentsMixin:
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
        view = self.view(p)
        with self.db.session() as s:
            # may this proposal use the instrument at all (403) before what it asks of it (422)
            self._check_can_run(s, p, body.proposal_id, body.instrument, view)
            try:
                params = w.instrument.validate_request(body.plan, body.parameters)
            except InvalidInput as exc:
                raise exc.under("parameters") from None
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
