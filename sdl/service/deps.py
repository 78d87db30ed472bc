"""The dependencies every router shares: the app's :class:`LabService` and the caller.

Routers are module-level ``APIRouter`` objects (FastAPI's "bigger applications" layout), so
they find the service on the app (``app.state.service``, set by
:func:`sdl.service.api.create_app`) rather than in a closure.
"""

from __future__ import annotations

from typing import Optional

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sdl.service.auth import Principal
from sdl.service.errors import Unauthorized
from sdl.service.guard import SCOPE_KEY
from sdl.service.service import LabService

API_VERSION = "1"
_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer sdl_...`")


def get_service(request: Request) -> LabService:
    """The app's service."""
    return request.app.state.service


def principal(request: Request, cred: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> Principal:
    """The caller, from ``Authorization: Bearer <token>`` (401 without a valid one)."""
    if cred is None or not cred.credentials:
        raise Unauthorized("missing bearer token: send Authorization: Bearer <token>")
    seen = request.scope.get(SCOPE_KEY)  # the middleware's reading of this request's token
    p = (seen[1] if seen is not None and seen[0] == cred.credentials
         else request.app.state.service.auth.authenticate(cred.credentials))
    if p is None:
        raise Unauthorized("invalid, expired or revoked token")
    return p


#: ``p: Principal = P`` in an endpoint's signature: the authenticated caller
P = Depends(principal)
#: ``svc: LabService = S`` in an endpoint's signature: the app's service
S = Depends(get_service)
