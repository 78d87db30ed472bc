"""Usage: time and experiments per proposal and instrument (JSON or CSV) and the
dedicated/shared split (``LabService``: :mod:`sdl.service.labservice.usage`). Utilisation
per instrument is in :mod:`sdl.service.webapi`."""

from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from sdl.service.auth import Principal
from sdl.service.authz import can
from sdl.service.deps import P, S
from sdl.service.errors import NotFound
from sdl.service.service import LabService

router = APIRouter(prefix="/api", tags=["usage"])

USAGE_COLUMNS = ["proposal_id", "title", "dedicated", "instrument", "experiments", "succeeded", "seconds", "hours",
                 "allocation_experiments", "allocation_hours"]


@router.get("/usage")
def usage(format: Literal["json", "csv"] = "json", proposal_id: Optional[str] = None,
          since: Optional[dt.datetime] = None, p: Principal = P, svc: LabService = S):
    rows = svc.usage_report(p, proposal_id, since)
    if format == "csv":
        return PlainTextResponse(svc.to_csv(USAGE_COLUMNS, rows), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="usage.csv"'})
    return rows


@router.get("/usage/shares")
def shares(p: Principal = P, svc: LabService = S) -> dict:
    if not can(p, "usage.all"):
        raise NotFound("not found")
    return svc.share_report()
