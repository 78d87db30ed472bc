"""Instruments: state, plans, pools, the queue, pause/resume/abort and the dedicated share
(``LabService``: :mod:`sdl.service.labservice.instruments`). Names may hold slashes (a table
pool, ``pool:/data/screen.csv``): every route takes ``{name:path}``."""

from __future__ import annotations

from fastapi import APIRouter, Query

from sdl.service.auth import Principal
from sdl.service.deps import P, S
from sdl.service.schemas import PauseIn, ReasonIn, ShareIn
from sdl.service.service import LabService

router = APIRouter(prefix="/api", tags=["instruments"])


@router.get("/instruments")
def instruments(p: Principal = P, svc: LabService = S) -> list[dict]:
    return [svc.instrument_json(n, p=p) for n in svc.workers]


@router.get("/instruments/{name:path}/plans/{plan}")
def plan_schema(name: str, plan: str, p: Principal = P, svc: LabService = S) -> dict:
    return svc.plan_schema(name, plan)


@router.get("/instruments/{name:path}/pool")
def pool(name: str, p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.instrument_pool(name)


@router.get("/instruments/{name:path}/queue")
def queue(name: str, limit: int = Query(200, ge=1, le=5000), p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.queue(p, name, limit)


@router.post("/instruments/{name:path}/pause")
def pause(name: str, body: PauseIn = PauseIn(), p: Principal = P, svc: LabService = S) -> dict:
    return svc.control_instrument(p, name, "pause", body.reason, body.immediate)


@router.post("/instruments/{name:path}/resume")
def resume(name: str, body: ReasonIn = ReasonIn(), p: Principal = P, svc: LabService = S) -> dict:
    return svc.control_instrument(p, name, "resume", body.reason)


@router.post("/instruments/{name:path}/abort")
def abort(name: str, body: ReasonIn = ReasonIn(), p: Principal = P, svc: LabService = S) -> dict:
    return svc.control_instrument(p, name, "abort", body.reason)


@router.put("/instruments/{name:path}/share")
def share(name: str, body: ShareIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.set_share(p, name, body.dedicated_fraction)


# Last: ``{name:path}`` (a table pool's name holds slashes: ``pool:/data/screen.csv``) would
# otherwise swallow the routes above.
@router.get("/instruments/{name:path}")
def instrument(name: str, p: Principal = P, svc: LabService = S) -> dict:
    return svc.instrument_json(name, p=p)
