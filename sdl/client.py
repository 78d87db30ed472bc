"""Python client of the sdl HTTP service.

>>> from sdl.client import Client
>>> c = Client("http://127.0.0.1:8000", token)                       # doctest: +SKIP
>>> item = c.submit(proposal_id, "sim-xrd", {"A": .3, "B": .4, "C": .3, "temperature": 420})  # doctest: +SKIP
>>> c.wait(item["id"])["result"]                                     # doctest: +SKIP

``base_url`` and ``token`` default to ``$SDL_URL`` and ``$SDL_TOKEN``. Errors raise
:class:`ServiceError` with the HTTP status, the message and (for 422) the field.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL = ("done", "failed", "aborted", "cancelled")
CAMPAIGN_FINAL = ("stopped", "completed", "failed")


class ServiceError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, body: Any = None):
        self.status = status
        self.message = message
        self.field = field
        self.body = body
        super().__init__(f"HTTP {status}: {message}")


class Client:
    def __init__(self, base_url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = (base_url or os.environ.get("SDL_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("SDL_TOKEN", "")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ basics
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.http.request(method, path, **kwargs)
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = r.text
            msg = body.get("message") or body.get("detail") if isinstance(body, dict) else body
            field = body.get("field") if isinstance(body, dict) else None
            raise ServiceError(r.status_code, msg if isinstance(msg, str) else json.dumps(msg), field, body)
        ctype = r.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            return r.json()
        if ctype.startswith("text/"):
            return r.text
        return r.content

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    def health(self) -> dict:
        return self.get("/health")

    def me(self) -> dict:
        return self.get("/api/me")

    # ---------------------------------------------------------------- accounts
    def create_user(self, name: str, role: str = "user", **kw: Any) -> dict:
        return self.post("/api/users", {"name": name, "role": role, **kw})

    def create_token(self, name: str = "", ttl_days: float | None = None, user_id: str | None = None) -> dict:
        body: dict[str, Any] = {"name": name}
        if ttl_days is not None:
            body["ttl_days"] = ttl_days
        if user_id is not None:
            body["user_id"] = user_id
        return self.post("/api/tokens", body)

    def revoke_token(self, token_id: str) -> dict:
        return self.request("DELETE", f"/api/tokens/{token_id}")

    # --------------------------------------------------------------- proposals
    def create_proposal(self, title: str, instruments: list[str], kind: str = "proprietary", **kw: Any) -> dict:
        return self.post("/api/proposals", {"title": title, "instruments": instruments, "kind": kind, **kw})

    def approve(self, proposal_id: str, **kw: Any) -> dict:
        return self.post(f"/api/proposals/{proposal_id}/approve", kw)

    def add_member(self, proposal_id: str, user: str, role: str = "member") -> dict:
        return self.post(f"/api/proposals/{proposal_id}/members", {"user": user, "role": role})

    def proposals(self) -> list[dict]:
        return self.get("/api/proposals")

    # ------------------------------------------------------------- instruments
    def instruments(self) -> list[dict]:
        return self.get("/api/instruments")

    def instrument(self, name: str) -> dict:
        return self.get(f"/api/instruments/{name}")

    def queue(self, instrument: str) -> list[dict]:
        return self.get(f"/api/instruments/{instrument}/queue")

    def pause(self, instrument: str, immediate: bool = True, reason: str = "") -> dict:
        return self.post(f"/api/instruments/{instrument}/pause", {"immediate": immediate, "reason": reason})

    def resume(self, instrument: str, reason: str = "") -> dict:
        return self.post(f"/api/instruments/{instrument}/resume", {"reason": reason})

    # ------------------------------------------------------------- experiments
    def submit(self, proposal_id: str, instrument: str, parameters: dict, plan: str | None = None,
               priority: int = 0, note: str = "") -> dict:
        """Queue one experiment; ``plan`` defaults to the instrument's default plan."""
        body = {"proposal_id": proposal_id, "instrument": instrument, "parameters": parameters,
                "priority": priority, "note": note}
        if plan is not None:
            body["plan"] = plan
        return self.post("/api/experiments", body)

    def experiment(self, item_id: str) -> dict:
        return self.get(f"/api/experiments/{item_id}")

    def experiments(self, **filters: Any) -> list[dict]:
        return self.get("/api/experiments", **filters)

    def cancel(self, item_id: str, reason: str = "") -> dict:
        return self.post(f"/api/experiments/{item_id}/cancel", {"reason": reason})

    def abort(self, item_id: str, reason: str = "") -> dict:
        return self.post(f"/api/experiments/{item_id}/abort", {"reason": reason})

    def documents(self, item_id: str) -> list[dict]:
        return self.get(f"/api/experiments/{item_id}/documents")

    def wait(self, item_id: str, timeout: float = 120.0, poll: float = 0.05) -> dict:
        """Poll until the experiment ends (done, failed, aborted, cancelled)."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.experiment(item_id)
            if item["status"] in FINAL:
                return item
            if time.monotonic() > deadline:
                raise TimeoutError(f"experiment {item_id} still {item['status']} after {timeout} s")
            time.sleep(poll)

    # --------------------------------------------------------------- campaigns
    def create_campaign(self, proposal_id: str, spec: dict, start: bool = False, priority: int = 0) -> dict:
        return self.post("/api/campaigns", {"proposal_id": proposal_id, "spec": spec, "start": start,
                                            "priority": priority})

    def campaign(self, campaign_id: str) -> dict:
        return self.get(f"/api/campaigns/{campaign_id}")

    def campaigns(self) -> list[dict]:
        return self.get("/api/campaigns")

    def campaign_action(self, campaign_id: str, action: str, reason: str = "") -> dict:
        return self.post(f"/api/campaigns/{campaign_id}/{action}", {"reason": reason})

    def add_point(self, campaign_id: str, parameters: dict, reason: str = "") -> dict:
        return self.post(f"/api/campaigns/{campaign_id}/points", {"parameters": parameters, "reason": reason})

    def veto(self, campaign_id: str, suggestion_id: str, reason: str = "") -> dict:
        return self.post(f"/api/campaigns/{campaign_id}/suggestions/{suggestion_id}/veto", {"reason": reason})

    def table(self, campaign_id: str, format: str = "json") -> Any:
        return self.get(f"/api/campaigns/{campaign_id}/table", format=format)

    def export(self, campaign_id: str) -> dict:
        return self.get(f"/api/campaigns/{campaign_id}/export")

    def rocrate(self, campaign_id: str) -> bytes:
        return self.get(f"/api/campaigns/{campaign_id}/rocrate")

    def wait_campaign(self, campaign_id: str, timeout: float = 600.0, poll: float = 0.2) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            c = self.campaign(campaign_id)
            if c["state"] in CAMPAIGN_FINAL:
                return c
            if time.monotonic() > deadline:
                raise TimeoutError(f"campaign {campaign_id} still {c['state']} after {timeout} s")
            time.sleep(poll)

    def usage(self, format: str = "json", **filters: Any) -> Any:
        return self.get("/api/usage", format=format, **filters)

    # ------------------------------------------------------------ live stream
    def stream_url(self, **filters: Any) -> str:
        from urllib.parse import urlencode

        ws = "ws" + self.base_url[4:] if self.base_url.startswith("http") else self.base_url
        q = {k: v for k, v in filters.items() if v is not None}
        return f"{ws}/api/stream" + (f"?{urlencode(q)}" if q else "")

    def stream(self, *, campaign_id: str | None = None, instrument: str | None = None,
               types: str | list[str] | None = None, timeout: float | None = None) -> Iterator[dict]:
        """Live events (documents, queue, campaign, instrument) as dicts, until closed.

        ``timeout``: stop after this long without an event.
        """
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        if isinstance(types, (list, tuple)):
            types = ",".join(types)
        url = self.stream_url(campaign_id=campaign_id, instrument=instrument, types=types)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        with connect(url, additional_headers=headers, max_size=2**26, open_timeout=30) as ws:
            while True:
                try:
                    msg = ws.recv(timeout=timeout)
                except TimeoutError:
                    return
                except ConnectionClosed:
                    return
                event = json.loads(msg)
                if event.get("type") == "error":
                    raise ServiceError(int(event.get("status", 400)), str(event.get("detail")))
                yield event
