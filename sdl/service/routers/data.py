"""Data: a run with its documents, an experiment's documents, a campaign's table (JSON or
CSV), export and RO-Crate (``LabService``: :mod:`sdl.service.labservice.data`). NeXus and
Tiled are in :mod:`sdl.data_views.api`."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from sdl.service.auth import Principal
from sdl.service.deps import P, S
from sdl.service.service import LabService

router = APIRouter(prefix="/api", tags=["data"])


@router.get("/experiments/{item_id}/documents")
def experiment_documents(item_id: str, p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.item_documents(p, item_id)


@router.get("/campaigns/{campaign_id}/table")
def table(campaign_id: str, format: Literal["json", "csv"] = "json", p: Principal = P, svc: LabService = S):
    cols, rows = svc.table(p, campaign_id)
    if format == "csv":
        return PlainTextResponse(svc.to_csv(cols, rows), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="{campaign_id}.csv"'})
    return {"columns": cols, "rows": rows}


@router.get("/campaigns/{campaign_id}/export")
def export(campaign_id: str, p: Principal = P, svc: LabService = S) -> dict:
    return svc.campaign_export(p, campaign_id)


@router.get("/campaigns/{campaign_id}/rocrate",
            responses={200: {"content": {"application/zip": {}}, "description": "an RO-Crate (zip)"}})
def rocrate(campaign_id: str, p: Principal = P, svc: LabService = S) -> Response:
    from sdl.service.crate import campaign_crate

    data = campaign_crate(svc, p, campaign_id)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{campaign_id}-rocrate.zip"'})


@router.get("/runs/{uid}")
def run(uid: str, documents: bool = True, p: Principal = P, svc: LabService = S) -> dict:
    return svc.run_json(p, uid, documents)
