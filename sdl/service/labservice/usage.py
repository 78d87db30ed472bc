"""Usage: the meter per proposal and instrument, and the dedicated/shared split
(router: :mod:`sdl.service.routers.usage`).

A part of :class:`sdl.service.service.LabService` (a mixin): its methods use the
service's state (``db``, ``store``, ``workers``, ``scheduler``...) set up there."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import case, func, select

from sdl.service.auth import Principal
from sdl.service.authz import can
from sdl.service.db import ProposalRow, UsageRow


class UsageMixin:
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
