"""Accounts: who am I, users and API tokens (``LabService``: :mod:`sdl.service.labservice.accounts`)."""

from __future__ import annotations

from fastapi import APIRouter

from sdl.service.auth import Principal
from sdl.service.deps import P, S
from sdl.service.schemas import TokenIn, UserIn, UserPatch
from sdl.service.service import LabService

router = APIRouter(prefix="/api", tags=["accounts"])


@router.get("/me")
def me(p: Principal = P, svc: LabService = S) -> dict:
    return svc.me(p)


@router.post("/users", status_code=201)
def create_user(body: UserIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.create_user(p, body.name, body.role, body.email, body.token_ttl_days)


@router.get("/users")
def list_users(p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.list_users(p)


@router.patch("/users/{user_id}")
def update_user(user_id: str, body: UserPatch, p: Principal = P, svc: LabService = S) -> dict:
    return svc.update_user(p, user_id, body.role, body.active)


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, p: Principal = P, svc: LabService = S) -> dict:
    return svc.create_token(p, body.name, body.ttl_days, body.user_id)


@router.get("/tokens")
def list_tokens(all: bool = False, p: Principal = P, svc: LabService = S) -> list[dict]:
    return svc.list_tokens(p, all)


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, p: Principal = P, svc: LabService = S) -> dict:
    return svc.revoke_token(p, token_id)
