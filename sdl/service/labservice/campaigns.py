"""Campaigns: create, control, suggestions and observations, points and vetoes
(router: :mod:`sdl.service.routers.campaigns`; the planner that runs them is
:mod:`sdl.service.campaigns`).

A part of :class:`sdl.service.service.LabService` (a mixin): its methods use the
service's state (``db``, ``store``, ``workers``, ``scheduler``...) set up there."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select

from sdl.campaign import CampaignSpec, best_trace, check_runnable, create_campaign
from sdl.errors import InvalidInput
from sdl.service.access import AccessView
from sdl.service.auth import Principal
from sdl.service.authz import can
from sdl.service.db import ItemRow, ProposalRow, ServiceCampaignRow, audit, iso
from sdl.service.errors import Conflict, Forbidden, NotFound
from sdl.service.labservice.common import SYSTEM, _require
from sdl.store import CampaignRow, jsonable, utcnow


class CampaignsMixin:
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
        view = self.view(p)
        with self.db.session() as s:
            self._check_can_run(s, p, body.proposal_id, spec.instrument, view)
        self._check_runnable(spec, inst)
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
    def _check_runnable(spec: CampaignSpec, instrument: Any) -> None:
        """The plan, the space, the objectives and the agent's options, refused before anything
        is stored or changed (fields named as in the request: ``spec.plan``,
        ``spec.space.parameters.3.lower``, ``spec.agent_options.beta``)."""
        try:
            check_runnable(spec, instrument)
        except InvalidInput as exc:
            raise exc.under("spec") from None

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
            if action == "start" and row.instrument in self.workers:  # stored before the checks existed
                crow = self.store.campaign(cid)
                self._check_runnable(CampaignSpec.model_validate(crow.spec), self.workers[row.instrument].instrument)
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

        cfg = self.settings.instrument(spec.instrument)
        return make_instrument(spec.instrument, options=cfg.options if cfg is not None else None).objectives

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
            raise exc.under("parameters") from None
        return {"id": sug.id, "params": sug.params, "provenance": sug.provenance.model_dump(), "status": "pending"}

    def veto(self, p: Principal, cid: str, sid: str, reason: str) -> dict:
        view = self.view(p)
        with self.db.read() as s:
            row = self._campaign_for(s, p, cid, view)
        _require(view.is_member(row.proposal_id), "only the proposal's members veto suggestions")
        return self.campaigns.veto(p, cid, sid, reason)
