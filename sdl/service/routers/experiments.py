"""Experiments: submit one to an instrument's queue, list, read, cancel, abort
(``LabService``: :mod:`sdl.service.labservice.experiments`)."""

from __future__ import annotations

from typing import Literal, Optional

from fastapi import APIRouter, Query

from sdl.service.auth import Principal
from sdl.service.deps import P, S
from sdl.service.schemas import ExperimentIn, ReasonIn
from sdl.service.service import LabService

router = APIRouter(prefix="/api", tags=["experiments"])


@router.post("/experiments", status_code=201)
def submit(body: ExperimentIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.submit(p, body)


@router.get("/experiments")
def list_experiments(proposal_id: Optional[str] = None, instrument: Optional[str] = None,
                     status: Optional[Literal["queued", "running", "done", "failed", "aborted",
                                              "cancelled"]] = None,
                     campaign_id: Optional[str] = None, limit: int = Query(100, ge=1, le=5000),
                     offset: int = Query(0, ge=0, le=1_000_000_000), p: Principal = P,
                     svc: LabService = S) -> list[dict]:
    return svc.list_items(p, proposal_id=proposal_id, instrument=instrument, status=status,
                          campaign_id=campaign_id, limit=limit, offset=offset)


@router.get("/experiments/{item_id}")
def get_experiment(item_id: str, p: Principal = P, svc: LabService = S) -> dict:
    return svc.get_item(p, item_id)


@router.post("/experiments/{item_id}/cancel")
def cancel(item_id: str, body: ReasonIn = ReasonIn(), p: Principal = P, svc: LabService = S) -> dict:
    return svc.cancel_item(p, item_id, body.reason)


@router.post("/experiments/{item_id}/abort")
def abort_experiment(item_id: str, body: ReasonIn = ReasonIn(), p: Principal = P, svc: LabService = S) -> dict:
    return svc.abort_item(p, item_id, body.reason)
