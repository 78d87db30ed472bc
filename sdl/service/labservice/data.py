"""Data: a campaign's table, runs and their documents, the campaign export
(router: :mod:`sdl.service.routers.data`).

A part of :class:`sdl.service.service.LabService` (a mixin): its methods use the
service's state (``db``, ``store``, ``workers``, ``scheduler``...) set up there."""

from __future__ import annotations

import csv
import io
from typing import Iterable

from sqlalchemy import select

from sdl.service.auth import Principal
from sdl.service.db import ItemRow, ServiceCampaignRow, iso
from sdl.service.errors import NotFound
from sdl.service.labservice.common import csv_cell
from sdl.store import RunRow, jsonable, utcnow


class DataMixin:
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
        """Whose run this is: its queue item's, its service campaign's, or its workflow's."""
        with self.db.read() as s:
            pid = s.scalar(select(ItemRow.proposal_id).where(ItemRow.run_uid == uid).limit(1))
            if pid is not None:
                return pid
        with self.store.session() as s:
            run = s.get(RunRow, uid)
            if run is None:
                return None
            cid = run.campaign_id
            wf_pid = _workflow_run_proposal(s, uid)
        if wf_pid is not None or cid is None:
            return wf_pid
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


def _workflow_run_proposal(s, uid: str) -> str | None:
    """The proposal of a run a workflow task made: the task's (its latest attempt), else the
    sample's history (an earlier, interrupted attempt of a retried task)."""
    from sdl.workflows.tables import SampleEventRow, SampleRow, TaskRow

    pid = s.scalar(select(TaskRow.proposal_id).where(TaskRow.run_uid == uid).limit(1))
    if not pid:
        pid = s.scalar(select(SampleRow.proposal_id).join(SampleEventRow, SampleEventRow.sample_id == SampleRow.id)
                       .where(SampleEventRow.run_uid == uid).limit(1))
    return pid or None
