"""The service itself: ``/health`` (no token) and the web app's page at ``/``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from sdl.service.deps import API_VERSION
from sdl.service.pages import page_response

router = APIRouter()


@router.get("/health", tags=["service"])
def health(request: Request) -> dict:
    settings, svc = request.app.state.settings, request.app.state.service
    return {"status": "ok", "version": API_VERSION, "sign_in": bool(settings.oidc_issuer),
            "instruments": {n: w.state for n, w in svc.workers.items()}}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    return page_response()
