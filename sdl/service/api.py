"""The HTTP API (FastAPI): ``create_app(settings)``.

Every ``/api`` endpoint but ``/health`` needs ``Authorization: Bearer <token>``. Bad
input answers 422 with the field named (``field`` and ``detail[].loc``); unknown
instruments, plans, and anything the caller may not see answer 404; bodies over
``max_body_bytes`` 413; more than the token's rate 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from contextlib import asynccontextmanager
from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sdl.errors import InvalidInput
from sdl.service.access import StreamAccess
from sdl.service.auth import Principal, hash_token
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

log = logging.getLogger(__name__)

API_VERSION = "1"
_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer sdl_...`")


# ------------------------------------------------------------------- errors
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

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(status_code=exc.status, content={"detail": exc.message, "error": exc.code},
                            headers=headers)


# --------------------------------------------------------------- middleware
class LimitsMiddleware:
    """413 for bodies over the limit, 429 beyond a token's (or address's) rate."""

    def __init__(self, app: Any, svc: LabService):
        self.app = app
        self.svc = svc
        self.max_body = svc.settings.max_body_bytes

    async def _reply(self, send, status: int, body: dict, headers: list | None = None) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            key = "t:" + hash_token(auth[7:].strip())
        else:
            client = scope.get("client") or ("?", 0)
            key = f"a:{client[0]}"
        ok, wait = self.svc.limiter.allow(key)
        if not ok:
            return await self._reply(send, 429, {"detail": f"rate limit: at most "
                                                 f"{self.svc.settings.rate_limit_per_minute:g} requests per minute "
                                                 f"(burst {self.svc.settings.rate_limit_burst}); retry in "
                                                 f"{wait:.2f} s", "error": "rate_limited"},
                                     [(b"retry-after", str(max(1, round(wait + 0.5))).encode())])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = self.max_body + 1
            if n > self.max_body:
                return await self._reply(send, 413, self._too_large(n))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            # read the body up to the limit, then hand it on
            chunks, size = [], 0
            while True:
                msg = await receive()
                if msg["type"] != "http.request":
                    break
                size += len(msg.get("body", b""))
                if size > self.max_body:
                    return await self._reply(send, 413, self._too_large(size))
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)

    def _too_large(self, n: int) -> dict:
        return {"detail": f"request body too large: {n} bytes; the limit is {self.max_body}", "error": "too_large"}


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
    )
    app.state.service = svc
    app.state.initial_admin_token = admin_token
    app.add_middleware(LimitsMiddleware, svc=svc)
    _install_error_handlers(app)

    def principal(cred: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> Principal:
        if cred is None or not cred.credentials:
            raise Unauthorized("missing bearer token: send Authorization: Bearer <token>")
        p = svc.auth.authenticate(cred.credentials)
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
        return {"status": "ok", "version": API_VERSION,
                "instruments": {n: w.state for n, w in svc.workers.items()}}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        from sdl.service.web import PAGE

        return HTMLResponse(PAGE)

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
        return [svc.instrument_json(n) for n in svc.workers]

    @api.get("/instruments/{name}", tags=["instruments"])
    def instrument(name: str, p: Principal = P) -> dict:
        return svc.instrument_json(name)

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
                         offset: int = Query(0, ge=0), p: Principal = P) -> list[dict]:
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
        if not p.is_staff:
            raise NotFound("not found")
        return svc.share_report()

    __import__("sdl.workflows.api").workflows.api.add_routes(api, svc, P)  # /api/workflows, /api/samples
    app.include_router(api)

    # ------------------------------------------------------------ live stream
    @app.websocket("/api/stream")
    async def stream(websocket: WebSocket, token: Optional[str] = None, campaign_id: Optional[str] = None,
                     instrument: Optional[str] = None, types: Optional[str] = None):
        # the token: Authorization header (programs), the subprotocols ["sdl.bearer", TOKEN]
        # (browsers, which cannot set headers; kept out of access logs), or ?token= (simple)
        auth = websocket.headers.get("authorization", "")
        protocols = [x.strip() for x in websocket.headers.get("sec-websocket-protocol", "").split(",") if x.strip()]
        subprotocol = None
        tok = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not tok and len(protocols) >= 2 and protocols[0] == "sdl.bearer":
            tok, subprotocol = protocols[1], "sdl.bearer"
        tok = tok or token or ""
        p = await asyncio.to_thread(svc.auth.authenticate, tok) if tok else None
        await websocket.accept(subprotocol=subprotocol)
        if p is None:
            await websocket.send_text(json.dumps({"type": "error", "status": 401,
                                                  "detail": "missing, invalid, expired or revoked token"}))
            await websocket.close(code=4401)
            return
        access = StreamAccess(svc.db, p, members=svc.members)
        if campaign_id is not None:
            try:
                await asyncio.to_thread(svc.campaign_json, p, campaign_id)
            except NotFound as exc:
                await websocket.send_text(json.dumps({"type": "error", "status": 404, "detail": exc.message}))
                await websocket.close(code=4404)
                return
        wanted = {t.strip() for t in types.split(",")} if types else None

        def accept(event) -> str | None:
            d = event.data
            if wanted is not None and d.get("type") not in wanted:
                return None
            if campaign_id is not None and d.get("campaign_id") != campaign_id:
                return None
            if instrument is not None and d.get("instrument") != instrument:
                return None
            if event.proposal_id is None or access.can_read(event.proposal_id):
                return event.text()
            if d.get("type") in ("queue", "instrument"):
                return event.public_text()
            return None

        sub = svc.bus.subscribe(asyncio.get_running_loop(), accept)
        try:
            await websocket.send_text(json.dumps({"type": "hello", "user": p.name, "role": p.role,
                                                  "filters": {"campaign_id": campaign_id, "instrument": instrument,
                                                              "types": sorted(wanted) if wanted else None}}))
            receiver = asyncio.ensure_future(websocket.receive_text())
            while True:
                getter = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await websocket.send_text(getter.result())
                else:
                    getter.cancel()
                if receiver in done:
                    try:
                        msg = receiver.result()
                    except Exception:  # noqa: BLE001 - the client went away
                        break
                    if msg == "ping":
                        await websocket.send_text(json.dumps({"type": "pong", "dropped": sub.dropped}))
                    receiver = asyncio.ensure_future(websocket.receive_text())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            svc.bus.unsubscribe(sub)
            for task in (locals().get("receiver"), locals().get("getter")):
                if task is not None and not task.done():
                    task.cancel()

    return app
