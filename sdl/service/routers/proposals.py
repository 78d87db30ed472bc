"""Proposals: beamtime requests, review, members and the audit log
(``LabService``: :mod:`sdl.service.labservice.proposals`)."""

from __future__ import annotations

from typing import Literal, Optional

from fastapi import APIRouter, Query

from sdl.service.auth import Principal
from sdl.service.deps import P, S
from sdl.service.schemas import ApprovalIn, DecisionIn, MemberIn, ProposalIn
from sdl.service.service import LabService

router = APIRouter(prefix="/api", tags=["proposals"])


@router.post("/proposals", status_code=201)
def create_proposal(body: ProposalIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.create_proposal(p, body)


@router.get("/proposals")
def list_proposals(status: Optional[Literal["pending", "approved", "rejected", "closed"]] = None,
                   p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.list_proposals(p, status)


@router.get("/proposals/{proposal_id}")
def get_proposal(proposal_id: str, p: Principal = P, svc: LabService = S) -> dict:
    return svc.get_proposal(p, proposal_id)


@router.post("/proposals/{proposal_id}/approve")
def approve(proposal_id: str, body: ApprovalIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.decide_proposal(p, proposal_id, "approve", body)


@router.post("/proposals/{proposal_id}/reject")
def reject(proposal_id: str, body: DecisionIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.decide_proposal(p, proposal_id, "reject", body)


@router.post("/proposals/{proposal_id}/close")
def close(proposal_id: str, body: DecisionIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.decide_proposal(p, proposal_id, "close", body)


@router.post("/proposals/{proposal_id}/members")
def add_member(proposal_id: str, body: MemberIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.add_member(p, proposal_id, body.user, body.role)


@router.delete("/proposals/{proposal_id}/members/{user}")
def remove_member(proposal_id: str, user: str, p: Principal = P, svc: LabService = S) -> dict:
    return svc.remove_member(p, proposal_id, user)


@router.get("/proposals/{proposal_id}/audit")
def proposal_audit(proposal_id: str, limit: int = Query(200, ge=1, le=10_000), p: Principal = P,
                   svc: LabService = S) -> list[dict]:
    return svc.audit_log(p, proposal_id, limit)


@router.get("/audit")
def audit_log(limit: int = Query(200, ge=1, le=10_000), action: Optional[str] = None,
              p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.audit_log(p, None, limit, action)
