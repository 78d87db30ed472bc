"""What the web app needs beyond the resource API: its static files, approving a campaign's
suggestion ("approve before run"), the agents on offer, and instrument utilisation.

A router of its own (included by :func:`sdl.service.api.create_app` with one line) so the
web app's additions stay out of the resource modules; every endpoint reuses the service's
own access checks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from sqlalchemy import select

from sdl.service.auth import Principal
from sdl.service.db import AuditRow, UsageRow, as_utc, iso
from sdl.service.errors import NotFound
from sdl.service.schemas import Body
from sdl.service.authz import can
from sdl.service.service import LabService, _require
from sdl.store import utcnow

STATIC_DIR = Path(__file__).parent / "webapp"
#: the files the app is made of (served from the package, nothing from a CDN)
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}


class ApproveIn(Body):
    comment: str = ""


def utilisation(svc: LabService, hours: float) -> dict[str, Any]:
    """Per instrument, over the last ``hours`` (or since the lab's first record, if later):
    seconds busy (the meter), paused (the audit log's pause/resume), idle (the rest), and
    the state now. ``down`` is the state now only: past outages are not recorded."""
    now = utcnow()
    with svc.db.read() as s:
        first = s.scalar(select(AuditRow.at).order_by(AuditRow.id).limit(1))
        since = now - dt.timedelta(hours=hours)
        if first is not None and as_utc(first) > since:
            since = as_utc(first)
        usage = s.execute(select(UsageRow.instrument, UsageRow.started_at, UsageRow.finished_at)
                          .where(UsageRow.finished_at >= since)).all()
        controls = s.execute(select(AuditRow.target_id, AuditRow.action, AuditRow.at)
                             .where(AuditRow.action.in_(("instrument.pause", "instrument.resume")))
                             .order_by(AuditRow.id)).all()
    window = max((now - since).total_seconds(), 1e-9)
    out: dict[str, Any] = {}
    for name, w in svc.workers.items():
        busy = sum((min(as_utc(f), now) - max(as_utc(st), since)).total_seconds()
                   for inst, st, f in usage if inst == name and as_utc(f) > since)
        paused, paused_since = 0.0, None
        for inst, action, at in controls:
            if inst != name:
                continue
            at = as_utc(at)
            if action == "instrument.pause" and paused_since is None:
                paused_since = at
            elif action == "instrument.resume" and paused_since is not None:
                paused += max(0.0, (at - max(paused_since, since)).total_seconds())
                paused_since = None
        if paused_since is not None:
            paused += (now - max(paused_since, since)).total_seconds()
        busy, paused = min(busy, window), min(paused, window)
        idle = max(0.0, window - busy - paused)
        state = w.state
        out[name] = {"state": state, "down": state in ("offline", "error"), "busy_seconds": round(busy, 3),
                     "paused_seconds": round(paused, 3), "idle_seconds": round(idle, 3),
                     "busy_fraction": busy / window, "paused_fraction": paused / window,
                     "idle_fraction": idle / window}
    return {"since": iso(since), "until": iso(now), "window_seconds": round(window, 3), "instruments": out}


def web_router(svc: LabService, principal: Callable[..., Principal]) -> APIRouter:
    router = APIRouter()
    P = Depends(principal)

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        path = STATIC_DIR / name
        try:
            found = "/" not in name and not name.startswith(".") and path.suffix in STATIC_TYPES and path.is_file()
        except OSError:  # a name the file system refuses (too long): not one of ours either
            found = False
        if not found:
            raise NotFound(f"no such file {name[:100]!r}")
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})

    @router.post("/api/campaigns/{campaign_id}/suggestions/{suggestion_id}/approve", tags=["campaigns"])
    def approve_suggestion(campaign_id: str, suggestion_id: str, body: ApproveIn, p: Principal = P) -> dict:
        """Let a pending suggestion run (campaigns with ``approve_before_run``): members only."""
        view = svc.view(p)
        with svc.db.read() as s:
            row = svc._campaign_for(s, p, campaign_id, view)
        _require(view.is_member(row.proposal_id), "only the proposal's members approve suggestions")
        return svc.campaigns.approve(p, campaign_id, suggestion_id, body.comment)

    @router.get("/api/agents", tags=["campaigns"])
    def agents(p: Principal = P) -> list[str]:
        """The agents a campaign spec may name."""
        from sdl.registry import agent_names

        return agent_names()  # sdl's own and those of plug-ins

    @router.get("/api/usage/utilisation", tags=["usage"])
    def instrument_utilisation(hours: float = Query(24.0, gt=0, le=24 * 366), p: Principal = P) -> dict:
        """Staff: time busy, paused and idle per instrument over the last ``hours``."""
        if not can(p, "usage.all"):
            raise NotFound("not found")
        return utilisation(svc, hours)

    return router
