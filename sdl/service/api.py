"""The HTTP API (FastAPI): ``create_app(settings)`` builds the app, its middleware and error
answers, and includes the routers: one per resource in :mod:`sdl.service.routers`, plus
sign-in (:mod:`sdl.service.oidc`), the data views (:mod:`sdl.data_views.api`) and the web
app's additions (:mod:`sdl.service.webapi`). docs/http-api.md "Code layout" has the map.

Every ``/api`` endpoint but ``/health`` needs ``Authorization: Bearer <token>``. Bad
input answers 422 with the field named (``field`` and ``detail[].loc``); unknown
instruments, plans, and anything the caller may not see answer 404; bodies over
``max_body_bytes`` 413; more than the token's rate 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdl.errors import InvalidInput
from sdl.service import routers
from sdl.service.deps import API_VERSION, P, principal
from sdl.service.errors import ServiceError
from sdl.service.guard import GuardMiddleware
from sdl.service.oidc import router as oidc_router
from sdl.service.pages import install_docs
from sdl.service.service import LabService
from sdl.service.settings import ServiceSettings
from sdl.space import validation_message
from sdl.service.webapi import web_router

log = logging.getLogger(__name__)

__all__ = ["API_VERSION", "create_app"]


# ------------------------------------------------------------------- errors
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid", 429: "rate_limited"}


def _invalid(field: str, message: str, value: Any = ...) -> JSONResponse:
    loc = ["body", *[int(x) if x.isdigit() else x for x in field.split(".")]]
    detail = {"loc": loc, "msg": message, "type": "value_error", "field": field}
    text = f"{field}: {message}"
    if value is not ...:
        detail["input"] = repr(value)[:200]
        text += f" (got {repr(value)[:200]})"
    return JSONResponse(status_code=422, content={"detail": [detail], "field": field, "message": text})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidInput)
    async def _invalid_input(request: Request, exc: InvalidInput):
        return _invalid(exc.field, exc.message, exc.value)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if broken is not None:  # not a field's fault: the documented 400
            at = broken.get("loc", ("body", "?"))[-1]
            return JSONResponse(status_code=400, content={
                "detail": f"the body is not JSON this service can read (malformed at character {at})",
                "error": "bad_request"})
        ctype = request.headers.get("content-type", "")
        if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") != "missing" for e in errors) \
                and "json" not in ctype.lower():
            return JSONResponse(status_code=415, content={
                "detail": f"send the body as JSON with Content-Type: application/json (got {ctype or 'none'!r})",
                "error": "unsupported_media_type"})
        details = []
        for err in errors:
            loc = list(err.get("loc", ()))
            parts = [str(x) for x in loc[1:]] if loc and loc[0] == "body" else [str(x) for x in loc]
            field = ".".join(parts) or "body"
            msg = validation_message(err)
            ctx = err.get("ctx", {}).get("error") if isinstance(err.get("ctx"), dict) else None
            if isinstance(ctx, InvalidInput):
                msg = ctx.message
            d = {"loc": loc, "msg": msg, "type": err.get("type", "value_error"), "field": field}
            details.append(d)
        first = details[0] if details else {"field": "body", "msg": "invalid"}
        return JSONResponse(status_code=422, content={"detail": details, "field": first["field"],
                                                      "message": f"{first['field']}: {first['msg']}"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        # FastAPI's own answers (unknown route 404, 405, unparsable body 400) get the documented body too
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "the body is not JSON this service can read (too deeply nested, or malformed)"
        return JSONResponse(status_code=exc.status_code, headers=getattr(exc, "headers", None),
                            content={"detail": detail, "error": ERROR_CODES.get(exc.status_code, "error")})

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(status_code=exc.status, content={"detail": exc.message, "error": exc.code},
                            headers=headers)


# --------------------------------------------------------------------- app
def create_app(settings: ServiceSettings | None = None, service: LabService | None = None) -> FastAPI:
    """The FastAPI app: API, live stream and web page; starts the scheduler and the
    instrument workers when it starts (``settings.start_workers``)."""
    settings = settings or ServiceSettings()
    svc = service or LabService(settings)
    admin_token = svc.bootstrap()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.start_workers:
            await asyncio.to_thread(svc.start)
        else:  # an API replica: no workers or planner, but it streams every run live
            await asyncio.to_thread(svc.start_relay)
        await asyncio.to_thread(svc.workflows.start, settings.start_workers)  # campaigns resumed; live events
        try:
            yield
        finally:
            await asyncio.to_thread(svc.workflows.stop)
            await asyncio.to_thread(svc.stop)

    app = FastAPI(
        title="sdl cloud lab",
        version=API_VERSION,
        description="Remote access to the self-driving lab: accounts, proposals, a fair queue per instrument, "
                    "experiments, autonomous campaigns, live documents and data. See docs/http-api.md.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs is served from installed files (sdl.service.pages)
    )
    app.state.service = svc  # what the routers' dependencies (sdl.service.deps) read
    app.state.settings = settings
    app.state.initial_admin_token = admin_token
    app.add_middleware(GuardMiddleware, svc=svc)
    _install_error_handlers(app)
    install_docs(app)

    for router in routers.ROUTERS:  # /health, /, and /api/<resource>... (sdl.service.routers)
        app.include_router(router)
    app.include_router(oidc_router(svc, principal))  # /api/auth/*: sign-in through the identity provider
    from sdl.data_views.api import data_router

    app.include_router(data_router(svc, P))  # NeXus downloads (sdl.data_views)
    workflows = APIRouter(prefix="/api")
    __import__("sdl.workflows.api").workflows.api.add_routes(workflows, svc, P)  # /api/workflows, /api/samples
    app.include_router(workflows)
    app.include_router(web_router(svc, principal))  # the web app's files and additions (sdl.service.webapi)
    app.include_router(routers.stream.router)  # /api/stream (WebSocket)
    return app
