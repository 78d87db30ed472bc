"""Campaigns: create one, start/pause/resume/stop, its suggestions and observations, add a
point, veto a suggestion (``LabService``: :mod:`sdl.service.labservice.campaigns`; the
runner is :mod:`sdl.service.campaigns`). Approving a suggestion and the agents on offer
are in :mod:`sdl.service.webapi`; the campaign's table and downloads in
:mod:`sdl.service.routers.data`."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter

from sdl.service.auth import Principal
from sdl.service.deps import P, S
from sdl.service.schemas import CampaignIn, PointIn, ReasonIn
from sdl.service.service import LabService

router = APIRouter(prefix="/api", tags=["campaigns"])


@router.post("/campaigns", status_code=201)
def create_campaign(body: CampaignIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.create_campaign(p, body)


@router.get("/campaigns")
def list_campaigns(proposal_id: Optional[str] = None, p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.list_campaigns(p, proposal_id)


@router.get("/campaigns/{campaign_id}")
def get_campaign(campaign_id: str, p: Principal = P, svc: LabService = S) -> dict:
    return svc.campaign_json(p, campaign_id, detail=True)


def _action_endpoint(action: str):
    def endpoint(campaign_id: str, body: ReasonIn = ReasonIn(), p: Principal = P, svc: LabService = S) -> dict:
        return svc.campaign_action(p, campaign_id, action, body.reason)

    endpoint.__name__ = f"campaign_{action}"
    return endpoint


for _action in ("start", "pause", "resume", "stop"):
    router.post(f"/campaigns/{{campaign_id}}/{_action}", name=f"campaign_{_action}")(_action_endpoint(_action))


@router.get("/campaigns/{campaign_id}/suggestions")
def suggestions(campaign_id: str, p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.campaign_suggestions(p, campaign_id)


@router.get("/campaigns/{campaign_id}/observations")
def observations(campaign_id: str, p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.campaign_observations(p, campaign_id)


@router.post("/campaigns/{campaign_id}/points", status_code=201)
def add_point(campaign_id: str, body: PointIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.add_point(p, campaign_id, body.parameters, body.reason)


@router.post("/campaigns/{campaign_id}/suggestions/{suggestion_id}/veto")
def veto(campaign_id: str, suggestion_id: str, body: ReasonIn = ReasonIn(), p: Principal = P,
         svc: LabService = S) -> dict:
    return svc.veto(p, campaign_id, suggestion_id, body.reason)
