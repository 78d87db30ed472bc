"""The HTTP API (FastAPI): ``create_app(settings)``.

Every ``/api`` endpoint but ``/health`` needs ``Authorization: Bearer <token>``. Bad
input answers 422 with the field named (``field`` and ``detail[].loc``); unknown
instruments, plans, and anything the caller may not see answer 404; bodies over
``max_body_bytes`` 413; more than the token's rate 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from contextlib import asynccontextmanager
from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdl.errors import InvalidInput
from sdl.service.auth import Principal
from sdl.service.authz import can
from sdl.service.guard import SCOPE_KEY, GuardMiddleware
from sdl.service.stream import serve_stream
from sdl.service.oidc import router as oidc_router
from sdl.service.pages import install_docs, page_response
from sdl.service.errors import NotFound, ServiceError, Unauthorized
from sdl.service.schemas import (
    ApprovalIn,
    CampaignIn,
    DecisionIn,
    ExperimentIn,
    MemberIn,
    PauseIn,
    PointIn,
    ProposalIn,
    ReasonIn,
    ShareIn,
    TokenIn,
    UserIn,
    UserPatch,
)
from sdl.service.service import LabService
from sdl.service.settings import ServiceSettings
from sdl.service.webapi import web_router

log = logging.getLogger(__name__)

API_VERSION = "1"
_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer sdl_...`")


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
        details = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            parts = [str(x) for x in loc[1:]] if loc and loc[0] == "body" else [str(x) for x in loc]
            field = ".".join(parts) or "body"
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
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
        try:
            yield
        finally:
            await asyncio.to_thread(svc.stop)

    app = FastAPI(
        title="sdl cloud lab",
        version=API_VERSION,
        description="Remote access to the self-driving lab: accounts, proposals, a fair queue per instrument, "
                    "experiments, autonomous campaigns, live documents and data. See docs/http-api.md.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs is served from installed files (sdl.service.pages)
    )
    app.state.service = svc
    app.state.initial_admin_token = admin_token
    app.add_middleware(GuardMiddleware, svc=svc)
    _install_error_handlers(app)
    install_docs(app)

    def principal(request: Request, cred: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> Principal:
        if cred is None or not cred.credentials:
            raise Unauthorized("missing bearer token: send Authorization: Bearer <token>")
        seen = request.scope.get(SCOPE_KEY)  # the middleware's reading of this request's token
        p = seen[1] if seen is not None and seen[0] == cred.credentials else svc.auth.authenticate(cred.credentials)
        if p is None:
            raise Unauthorized("invalid, expired or revoked token")
        return p

    P = Depends(principal)
    api = APIRouter(prefix="/api")

    def base(request: Request) -> str:
        return "/api"

    # ---------------------------------------------------------------- health
    @app.get("/health", tags=["service"])
    def health() -> dict:
        return {"status": "ok", "version": API_VERSION, "sign_in": bool(settings.oidc_issuer),
                "instruments": {n: w.state for n, w in svc.workers.items()}}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return page_response()

    # -------------------------------------------------------------- accounts
    @api.get("/me", tags=["accounts"])
    def me(p: Principal = P) -> dict:
        return svc.me(p)

    @api.post("/users", status_code=201, tags=["accounts"])
    def create_user(body: UserIn, p: Principal = P) -> dict:
        return svc.create_user(p, body.name, body.role, body.email, body.token_ttl_days)

    @api.get("/users", tags=["accounts"])
    def list_users(p: Principal = P) -> list[dict]:
        return svc.list_users(p)

    @api.patch("/users/{user_id}", tags=["accounts"])
    def update_user(user_id: str, body: UserPatch, p: Principal = P) -> dict:
        return svc.update_user(p, user_id, body.role, body.active)

    @api.post("/tokens", status_code=201, tags=["accounts"])
    def create_token(body: TokenIn, p: Principal = P) -> dict:
        return svc.create_token(p, body.name, body.ttl_days, body.user_id)

    @api.get("/tokens", tags=["accounts"])
    def list_tokens(all: bool = False, p: Principal = P) -> list[dict]:
        return svc.list_tokens(p, all)

    @api.delete("/tokens/{token_id}", tags=["accounts"])
    def revoke_token(token_id: str, p: Principal = P) -> dict:
        return svc.revoke_token(p, token_id)

    # ------------------------------------------------------------- proposals
    @api.post("/proposals", status_code=201, tags=["proposals"])
    def create_proposal(body: ProposalIn, p: Principal = P) -> dict:
        return svc.create_proposal(p, body)

    @api.get("/proposals", tags=["proposals"])
    def list_proposals(status: Optional[Literal["pending", "approved", "rejected", "closed"]] = None,
                       p: Principal = P) -> list[dict]:
        return svc.list_proposals(p, status)

    @api.get("/proposals/{proposal_id}", tags=["proposals"])
    def get_proposal(proposal_id: str, p: Principal = P) -> dict:
        return svc.get_proposal(p, proposal_id)

    @api.post("/proposals/{proposal_id}/approve", tags=["proposals"])
    def approve(proposal_id: str, body: ApprovalIn, p: Principal = P) -> dict:
        return svc.decide_proposal(p, proposal_id, "approve", body)

    @api.post("/proposals/{proposal_id}/reject", tags=["proposals"])
    def reject(proposal_id: str, body: DecisionIn, p: Principal = P) -> dict:
        return svc.decide_proposal(p, proposal_id, "reject", body)

    @api.post("/proposals/{proposal_id}/close", tags=["proposals"])
    def close(proposal_id: str, body: DecisionIn, p: Principal = P) -> dict:
        return svc.decide_proposal(p, proposal_id, "close", body)

    @api.post("/proposals/{proposal_id}/members", tags=["proposals"])
    def add_member(proposal_id: str, body: MemberIn, p: Principal = P) -> dict:
        return svc.add_member(p, proposal_id, body.user, body.role)

    @api.delete("/proposals/{proposal_id}/members/{user}", tags=["proposals"])
    def remove_member(proposal_id: str, user: str, p: Principal = P) -> dict:
        return svc.remove_member(p, proposal_id, user)

    @api.get("/proposals/{proposal_id}/audit", tags=["proposals"])
    def proposal_audit(proposal_id: str, limit: int = Query(200, ge=1, le=10_000), p: Principal = P) -> list[dict]:
        return svc.audit_log(p, proposal_id, limit)

    @api.get("/audit", tags=["proposals"])
    def audit_log(limit: int = Query(200, ge=1, le=10_000), action: Optional[str] = None,
                  p: Principal = P) -> list[dict]:
        return svc.audit_log(p, None, limit, action)

    # ----------------------------------------------------------- instruments
    @api.get("/instruments", tags=["instruments"])
    def instruments(p: Principal = P) -> list[dict]:
        return [svc.instrument_json(n, p=p) for n in svc.workers]

    @api.get("/instruments/{name}", tags=["instruments"])
    def instrument(name: str, p: Principal = P) -> dict:
        return svc.instrument_json(name, p=p)

    @api.get("/instruments/{name}/plans/{plan}", tags=["instruments"])
    def plan_schema(name: str, plan: str, p: Principal = P) -> dict:
        return svc.plan_schema(name, plan)

    @api.get("/instruments/{name}/pool", tags=["instruments"])
    def pool(name: str, p: Principal = P) -> list[dict]:
        return svc.instrument_pool(name)

    @api.get("/instruments/{name}/queue", tags=["instruments"])
    def queue(name: str, limit: int = Query(200, ge=1, le=5000), p: Principal = P) -> list[dict]:
        return svc.queue(p, name, limit)

    @api.post("/instruments/{name}/pause", tags=["instruments"])
    def pause(name: str, body: PauseIn, p: Principal = P) -> dict:
        return svc.control_instrument(p, name, "pause", body.reason, body.immediate)

    @api.post("/instruments/{name}/resume", tags=["instruments"])
    def resume(name: str, body: ReasonIn, p: Principal = P) -> dict:
        return svc.control_instrument(p, name, "resume", body.reason)

    @api.post("/instruments/{name}/abort", tags=["instruments"])
    def abort(name: str, body: ReasonIn, p: Principal = P) -> dict:
        return svc.control_instrument(p, name, "abort", body.reason)

    @api.put("/instruments/{name}/share", tags=["instruments"])
    def share(name: str, body: ShareIn, p: Principal = P) -> dict:
        return svc.set_share(p, name, body.dedicated_fraction)

    # ----------------------------------------------------------- experiments
    @api.post("/experiments", status_code=201, tags=["experiments"])
    def submit(body: ExperimentIn, p: Principal = P) -> dict:
        return svc.submit(p, body)

    @api.get("/experiments", tags=["experiments"])
    def list_experiments(proposal_id: Optional[str] = None, instrument: Optional[str] = None,
                         status: Optional[Literal["queued", "running", "done", "failed", "aborted",
                                                  "cancelled"]] = None,
                         campaign_id: Optional[str] = None, limit: int = Query(100, ge=1, le=5000),
                         offset: int = Query(0, ge=0, le=1_000_000_000), p: Principal = P) -> list[dict]:
        return svc.list_items(p, proposal_id=proposal_id, instrument=instrument, status=status,
                              campaign_id=campaign_id, limit=limit, offset=offset)

    @api.get("/experiments/{item_id}", tags=["experiments"])
    def get_experiment(item_id: str, p: Principal = P) -> dict:
        return svc.get_item(p, item_id)

    @api.post("/experiments/{item_id}/cancel", tags=["experiments"])
    def cancel(item_id: str, body: ReasonIn, p: Principal = P) -> dict:
        return svc.cancel_item(p, item_id, body.reason)

    @api.post("/experiments/{item_id}/abort", tags=["experiments"])
    def abort_experiment(item_id: str, body: ReasonIn, p: Principal = P) -> dict:
        return svc.abort_item(p, item_id, body.reason)

    @api.get("/experiments/{item_id}/documents", tags=["data"])
    def experiment_documents(item_id: str, p: Principal = P) -> list[dict]:
        return svc.item_documents(p, item_id)

    # ------------------------------------------------------------- campaigns
    @api.post("/campaigns", status_code=201, tags=["campaigns"])
    def create_campaign(body: CampaignIn, p: Principal = P) -> dict:
        return svc.create_campaign(p, body)

    @api.get("/campaigns", tags=["campaigns"])
    def list_campaigns(proposal_id: Optional[str] = None, p: Principal = P) -> list[dict]:
        return svc.list_campaigns(p, proposal_id)

    @api.get("/campaigns/{campaign_id}", tags=["campaigns"])
    def get_campaign(campaign_id: str, p: Principal = P) -> dict:
        return svc.campaign_json(p, campaign_id, detail=True)

    for _action in ("start", "pause", "resume", "stop"):
        def _make(action: str):
            def endpoint(campaign_id: str, body: ReasonIn, p: Principal = P) -> dict:
                return svc.campaign_action(p, campaign_id, action, body.reason)

            endpoint.__name__ = f"campaign_{action}"
            return endpoint

        api.post(f"/campaigns/{{campaign_id}}/{_action}", tags=["campaigns"], name=f"campaign_{_action}")(
            _make(_action))

    @api.get("/campaigns/{campaign_id}/suggestions", tags=["campaigns"])
    def suggestions(campaign_id: str, p: Principal = P) -> list[dict]:
        return svc.campaign_suggestions(p, campaign_id)

    @api.get("/campaigns/{campaign_id}/observations", tags=["campaigns"])
    def observations(campaign_id: str, p: Principal = P) -> list[dict]:
        return svc.campaign_observations(p, campaign_id)

    @api.post("/campaigns/{campaign_id}/points", status_code=201, tags=["campaigns"])
    def add_point(campaign_id: str, body: PointIn, p: Principal = P) -> dict:
        return svc.add_point(p, campaign_id, body.parameters, body.reason)

    @api.post("/campaigns/{campaign_id}/suggestions/{suggestion_id}/veto", tags=["campaigns"])
    def veto(campaign_id: str, suggestion_id: str, body: ReasonIn, p: Principal = P) -> dict:
        return svc.veto(p, campaign_id, suggestion_id, body.reason)

    @api.get("/campaigns/{campaign_id}/table", tags=["data"])
    def table(campaign_id: str, format: Literal["json", "csv"] = "json", p: Principal = P):
        cols, rows = svc.table(p, campaign_id)
        if format == "csv":
            return PlainTextResponse(svc.to_csv(cols, rows), media_type="text/csv",
                                     headers={"Content-Disposition": f'attachment; filename="{campaign_id}.csv"'})
        return {"columns": cols, "rows": rows}

    @api.get("/campaigns/{campaign_id}/export", tags=["data"])
    def export(campaign_id: str, p: Principal = P) -> dict:
        return svc.campaign_export(p, campaign_id)

    @api.get("/campaigns/{campaign_id}/rocrate", tags=["data"],
             responses={200: {"content": {"application/zip": {}}, "description": "an RO-Crate (zip)"}})
    def rocrate(campaign_id: str, p: Principal = P) -> Response:
        from sdl.service.crate import campaign_crate

        data = campaign_crate(svc, p, campaign_id)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{campaign_id}-rocrate.zip"'})

    # ------------------------------------------------------------------ data
    @api.get("/runs/{uid}", tags=["data"])
    def run(uid: str, documents: bool = True, p: Principal = P) -> dict:
        return svc.run_json(p, uid, documents)

    @api.get("/usage", tags=["usage"])
    def usage(format: Literal["json", "csv"] = "json", proposal_id: Optional[str] = None,
              since: Optional[dt.datetime] = None, p: Principal = P):
        rows = svc.usage_report(p, proposal_id, since)
        if format == "csv":
            cols = ["proposal_id", "title", "dedicated", "instrument", "experiments", "succeeded", "seconds", "hours",
                    "allocation_experiments", "allocation_hours"]
            return PlainTextResponse(svc.to_csv(cols, rows), media_type="text/csv",
                                     headers={"Content-Disposition": 'attachment; filename="usage.csv"'})
        return rows

    @api.get("/usage/shares", tags=["usage"])
    def shares(p: Principal = P) -> dict:
        if not can(p, "usage.all"):
            raise NotFound("not found")
        return svc.share_report()

    app.include_router(api)
    app.include_router(oidc_router(svc, principal))  # /api/auth/*: sign-in through the identity provider
    from sdl.data_views.api import data_router

    app.include_router(data_router(svc, P))  # NeXus downloads (sdl.data_views)
    app.include_router(web_router(svc, principal))  # the web app's files and additions (sdl.service.webapi)

    # ------------------------------------------------------------ live stream
    @app.websocket("/api/stream")
    async def stream(websocket: WebSocket, token: Optional[str] = None, campaign_id: Optional[str] = None,
                     instrument: Optional[str] = None, types: Optional[str] = None):
        await serve_stream(svc, websocket, token, campaign_id, instrument, types)

    return app
