"""Workflows and samples over HTTP, under the service's access rules: a caller sees a
workflow, a sample or a workflow campaign only if it may read the proposal it belongs
to (a proprietary proposal's samples are its members' alone; anything else answers
404, as if it did not exist); starting or cancelling needs membership of an approved
proposal that includes every station of the workflow.

Task and sample changes go onto the service's live stream (``/api/stream``, event
types ``task`` and ``sample``, delivered under the same rules): a pump follows the
workflow tables, because the station workers that change them are other processes.

Campaign runners are threads of the service; the stations' workers are ``sdl
workflow worker`` processes (any host, same store). A service started again resumes
the workflow campaigns that were running.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from sdl.errors import InvalidInput
from sdl.service.schemas import ReasonIn
from sdl.workflows.engine import Engine
from sdl.workflows.tables import SampleEventRow, SampleRow, TaskRow, WorkflowRow

log = logging.getLogger(__name__)


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    proposal_id: str
    workflow: dict
    parameters: dict = Field(..., description="the point the make task makes")


class WorkflowCampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    proposal_id: str
    spec: dict = Field(..., description="a workflow campaign spec (see docs/workflows.md)")


class WorkflowService:
    """The service's side of workflows: access checks, campaign runner threads, the event pump."""

    def __init__(self, svc: Any, *, lease_s: float = 10.0, poll_s: float = 0.2):
        self.svc = svc
        self.engine = Engine(svc.store, lease_s=lease_s)
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.runners: dict[str, threading.Thread] = {}
        self._runner_objs: dict[str, Any] = {}
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None
        self._lock = threading.Lock()

    # -------------------------------------------------------------- lifecycle
    def start(self, resume: bool = True) -> None:
        """The event pump; with ``resume`` (the service runs workers, not an API replica) the
        campaign runners of the workflow campaigns that were running."""
        with self._lock:
            if self._pump is None:
                self._pump = threading.Thread(target=self._pump_events, name="wf-events", daemon=True)
                self._pump.start()
        if not resume:
            return
        for row in self.svc.store.campaigns():  # resume what a stopped service left running
            if (row.spec or {}).get("kind") == "workflow" and row.status == "running":
                self._start_runner(row.id)

    def stop(self) -> None:
        """Stop the pump and the runners; their campaigns stay running (the next start resumes them)."""
        self._stop.set()
        with self._lock:
            runners = list(self._runner_objs.values())
        for r in runners:
            r.halt()
        for th in list(self.runners.values()):
            th.join(10)

    def _start_runner(self, cid: str) -> None:
        from sdl.workflows.campaign import WorkflowCampaignRunner

        with self._lock:
            if cid in self.runners and self.runners[cid].is_alive():
                return
            runner = WorkflowCampaignRunner(self.svc.store, cid, lease_s=self.lease_s)
            self._runner_objs[cid] = runner
            def run() -> None:
                try:
                    runner.run("none")
                except Exception as exc:  # noqa: BLE001 - said in the campaign, not lost in a thread
                    log.exception("workflow campaign %s", cid)
                    self.svc.store.set_campaign_status(cid, "failed", f"{type(exc).__name__}: {exc}")

            th = threading.Thread(target=run, name=f"wf-campaign-{cid[:8]}", daemon=True)
            self.runners[cid] = th
            th.start()

    # ----------------------------------------------------------------- access
    def _check_can_run(self, p: Any, proposal_id: str, instruments: list[str]) -> None:
        view = self.svc.view(p)
        with self.svc.db.session() as s:
            for inst in instruments:
                self.svc._check_can_run(s, p, proposal_id, inst, view)

    def _readable(self, p: Any, proposal_id: str | None, what: str, ident: str) -> None:
        from sdl.service.errors import NotFound

        if not proposal_id or not self.svc.view(p).can_read(proposal_id):
            raise NotFound(f"{what} {ident!r} not found")

    def _workflow_row(self, p: Any, wid: str) -> WorkflowRow:
        from sdl.service.errors import NotFound

        with self.svc.store.session() as s:
            wf = s.get(WorkflowRow, wid)
        if wf is None:
            raise NotFound(f"workflow {wid!r} not found")
        self._readable(p, wf.proposal_id, "workflow", wid)
        return wf

    # -------------------------------------------------------------- endpoints
    def submit(self, p: Any, body: WorkflowIn) -> dict:
        from sdl.workflows.graph import validate_workflow

        spec = validate_workflow(body.workflow)
        self._check_can_run(p, body.proposal_id, spec.instruments)
        wid = self.engine.submit(spec, body.parameters, proposal_id=body.proposal_id)
        return self.engine.workflow(wid)

    def get(self, p: Any, wid: str) -> dict:
        self._workflow_row(p, wid)
        return self.engine.workflow(wid)

    def list(self, p: Any, campaign_id: str | None, limit: int) -> list[dict]:
        view = self.svc.view(p)
        rows = self.engine.workflows(campaign_id)
        out = [r for r in rows if r.proposal_id and view.can_read(r.proposal_id)][-limit:]
        return [self.engine.workflow(r.id) for r in out]

    def cancel(self, p: Any, wid: str, reason: str) -> dict:
        from sdl.service.errors import NotFound

        wf = self._workflow_row(p, wid)
        from sdl.service.authz import can

        if not (self.svc.view(p).is_member(wf.proposal_id) or can(p, "experiments.stop")):
            raise NotFound(f"workflow {wid!r} not found")
        self.engine.cancel(wid, reason or f"cancelled by {p.name}")
        return self.engine.workflow(wid)

    def sample(self, p: Any, sample_id: str) -> dict:
        from sdl.service.errors import NotFound

        with self.svc.store.session() as s:
            row = s.get(SampleRow, sample_id)
        if row is None:
            raise NotFound(f"sample {sample_id!r} not found")
        self._readable(p, row.proposal_id, "sample", sample_id)
        return self.engine.sample(sample_id)

    def samples(self, p: Any, campaign_id: str | None) -> list[dict]:
        view = self.svc.view(p)
        return [s for s in self.engine.samples(campaign_id) if s["proposal_id"] and view.can_read(s["proposal_id"])]

    def create_campaign(self, p: Any, body: WorkflowCampaignIn) -> dict:
        from sdl.workflows.campaign import create_workflow_campaign, validate_campaign

        try:
            spec = validate_campaign({**body.spec, "proposal": body.proposal_id})
        except InvalidInput as exc:  # named as in the request: spec.budget
            raise exc.under("spec") from None
        self._check_can_run(p, body.proposal_id, spec.spec.instruments)
        cid = create_workflow_campaign(self.svc.store, spec)
        self.svc.store.set_campaign_status(cid, "running")
        self._start_runner(cid)
        return self.campaign(p, cid)

    def _campaign_row(self, p: Any, cid: str):
        from sdl.service.errors import NotFound

        try:
            row = self.svc.store.campaign(cid)
        except InvalidInput:
            raise NotFound(f"workflow campaign {cid!r} not found") from None
        if (row.spec or {}).get("kind") != "workflow":
            raise NotFound(f"workflow campaign {cid!r} not found")
        self._readable(p, row.spec.get("proposal"), "workflow campaign", cid)
        return row

    def campaign(self, p: Any, cid: str) -> dict:
        row = self._campaign_row(p, cid)
        obs = self.svc.store.observations(cid)
        return {"id": cid, "name": row.name, "status": row.status, "message": row.message,
                "proposal_id": row.spec.get("proposal"), "budget": row.spec.get("budget"),
                "observations": [o.model_dump(mode="json") for o in obs],
                "workflows": [{"id": w.id, "status": w.status} for w in self.engine.workflows(cid)]}

    def crate(self, p: Any, cid: str) -> bytes:
        from sdl.workflows.export import campaign_crate

        self._campaign_row(p, cid)
        return campaign_crate(self.svc.store, cid)

    # ---------------------------------------------------------------- events
    def _pump_events(self) -> None:
        """Follow the workflow tables (other processes write them) onto the service's bus."""
        last_event = 0
        seen: dict[str, tuple[str, int]] = {}
        with self.svc.store.session() as s:
            last_event = s.scalar(select(SampleEventRow.id).order_by(SampleEventRow.id.desc()).limit(1)) or 0
        while not self._stop.wait(self.poll_s):
            try:
                with self.svc.store.session() as s:
                    evs = list(s.scalars(select(SampleEventRow).where(SampleEventRow.id > last_event)
                                         .order_by(SampleEventRow.id).limit(500)))
                    props = {r.id: (r.proposal_id, r.campaign_id) for r in s.scalars(
                        select(SampleRow).where(SampleRow.id.in_({e.sample_id for e in evs})))} if evs else {}
                    tasks = list(s.scalars(select(TaskRow).where(TaskRow.status.in_(("ready", "running")))))
                    recent = list(s.scalars(select(TaskRow).where(TaskRow.id.in_(list(seen))))) if seen else []
                from sdl.workflows.samples import event_dict

                for e in evs:
                    last_event = e.id
                    pid, cid = props.get(e.sample_id, ("", None))
                    self.svc.bus.publish({"type": "sample", "sample_id": e.sample_id, "campaign_id": cid,
                                          **event_dict(e)}, pid or None, relay=False)
                now = {t.id: t for t in tasks + recent}
                for tid, t in now.items():
                    key = (t.status, t.attempts)
                    if seen.get(tid) != key:
                        seen[tid] = key
                        self.svc.bus.publish({"type": "task", "workflow_id": t.workflow_id, "task": t.name,
                                              "task_id": t.id, "instrument": t.instrument, "status": t.status,
                                              "attempts": t.attempts, "sample_id": t.sample_id, "error": t.error},
                                             t.proposal_id or None, relay=False)
                for tid in [k for k, t in now.items() if t.status not in ("ready", "running", "waiting")]:
                    seen.pop(tid, None)
            except Exception as exc:  # noqa: BLE001 - the next poll tries again
                log.warning("workflow events: %s", exc)


def add_routes(api: APIRouter, svc: Any, P: Any) -> WorkflowService:
    """Mount the workflow and sample endpoints on the service's ``/api`` router."""
    ws = WorkflowService(svc)
    svc.workflows = ws

    @api.post("/workflows", status_code=201, tags=["workflows"])
    def submit_workflow(body: WorkflowIn, p=P) -> dict:
        return ws.submit(p, body)

    @api.get("/workflows", tags=["workflows"])
    def list_workflows(campaign_id: Optional[str] = None, limit: int = Query(100, ge=1, le=5000), p=P) -> list[dict]:
        return ws.list(p, campaign_id, limit)

    @api.get("/workflows/{workflow_id}", tags=["workflows"])
    def get_workflow(workflow_id: str, p=P) -> dict:
        return ws.get(p, workflow_id)

    @api.post("/workflows/{workflow_id}/cancel", tags=["workflows"])
    def cancel_workflow(workflow_id: str, body: ReasonIn = ReasonIn(), p=P) -> dict:
        return ws.cancel(p, workflow_id, body.reason)

    @api.get("/samples", tags=["samples"])
    def list_samples(campaign_id: Optional[str] = None, p=P) -> list[dict]:
        return ws.samples(p, campaign_id)

    @api.get("/samples/{sample_id}", tags=["samples"])
    def get_sample(sample_id: str, p=P) -> dict:
        return ws.sample(p, sample_id)

    @api.post("/workflow-campaigns", status_code=201, tags=["workflows"])
    def create_workflow_campaign(body: WorkflowCampaignIn, p=P) -> dict:
        return ws.create_campaign(p, body)

    @api.get("/workflow-campaigns/{campaign_id}", tags=["workflows"])
    def get_workflow_campaign(campaign_id: str, p=P) -> dict:
        return ws.campaign(p, campaign_id)

    @api.get("/workflow-campaigns/{campaign_id}/rocrate", tags=["data"],
             response_class=Response)
    def workflow_campaign_rocrate(campaign_id: str, p=P) -> Response:
        return Response(ws.crate(p, campaign_id), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{campaign_id}-rocrate.zip"'})

    return ws


__all__ = ["WorkflowService", "add_routes", "Depends"]
