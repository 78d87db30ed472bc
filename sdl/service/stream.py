"""The live stream (``/api/stream``): one WebSocket client, authorised like an HTTP request
and re-authorised while it is open.

The client's token, account and memberships are checked at connection, and again at
once whenever any token, account, membership or proposal decision changes in this
process (the caches' change listeners), and every ``RECHECK_S`` seconds for changes
made by other replicas. A revoked or expired token or a deactivated account closes the
stream (4401); a campaign that can no longer be read closes a campaign stream (4404);
otherwise events are filtered by the current view -- also those already buffered,
which are filtered again as they are sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from sdl.service.access import StreamAccess
from sdl.service.db import ServiceCampaignRow
from sdl.service.events import Event

#: how often an open stream re-reads its authorisation without being told of a change
RECHECK_S = 2.0


def stream_token(websocket: WebSocket, token: str | None) -> tuple[str, str | None]:
    """The token (Authorization header, subprotocols ``["sdl.bearer", TOKEN]``, or ``?token=``)
    and the subprotocol to answer with."""
    auth = websocket.headers.get("authorization", "")
    protocols = [x.strip() for x in websocket.headers.get("sec-websocket-protocol", "").split(",") if x.strip()]
    tok = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not tok and len(protocols) >= 2 and protocols[0] == "sdl.bearer":
        return protocols[1], "sdl.bearer"
    return tok or token or "", None


async def _close(websocket: WebSocket, status: int, detail: str) -> None:
    try:
        await websocket.send_text(json.dumps({"type": "error", "status": status, "detail": detail}))
        await websocket.close(code=4000 + status)
    except (WebSocketDisconnect, RuntimeError):
        pass


async def serve_stream(svc: Any, websocket: WebSocket, token: str | None, campaign_id: str | None,
                       instrument: str | None, types: str | None) -> None:
    tok, subprotocol = stream_token(websocket, token)
    client = (websocket.client.host if websocket.client else "?")
    p = await asyncio.to_thread(svc.auth.authenticate, tok) if tok else None
    await websocket.accept(subprotocol=subprotocol)
    if p is None:
        svc.failure_limiter.allow(f"f:{client}")
        return await _close(websocket, 401, "missing, invalid, expired or revoked token")
    for limiter, key in ((svc.address_limiter, f"a:{client}"), (svc.limiter, f"u:{p.user_id}")):
        ok, wait = limiter.allow(key)
        if not ok:
            return await _close(websocket, 429, f"rate limit: retry in {wait:.2f} s")
    if not _OPEN.enter(p.user_id, svc.settings.max_streams_per_account):
        return await _close(websocket, 429, f"at most {svc.settings.max_streams_per_account} live streams per "
                                             "account; close one first")
    try:
        await _serve(svc, websocket, p, tok, campaign_id, instrument, types)
    finally:
        _OPEN.leave(p.user_id)


class _OpenStreams:
    """Streams open per account (in this process)."""

    def __init__(self) -> None:
        self._n: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, user_id: str, cap: int) -> bool:
        with self._lock:
            if self._n.get(user_id, 0) >= cap:
                return False
            self._n[user_id] = self._n.get(user_id, 0) + 1
            return True

    def leave(self, user_id: str) -> None:
        with self._lock:
            self._n[user_id] = self._n.get(user_id, 1) - 1
            if self._n[user_id] <= 0:
                del self._n[user_id]


_OPEN = _OpenStreams()


async def _serve(svc: Any, websocket: WebSocket, p: Any, tok: str, campaign_id: str | None,
                 instrument: str | None, types: str | None) -> None:
    access = StreamAccess(svc.db, p, members=svc.members)
    campaign_pid = None
    if campaign_id is not None:
        def campaign_proposal() -> str | None:
            with svc.db.read() as s:
                row = s.get(ServiceCampaignRow, campaign_id)
            return None if row is None else row.proposal_id

        campaign_pid = await asyncio.to_thread(campaign_proposal)
        if campaign_pid is None or not await asyncio.to_thread(access.can_read, campaign_pid):
            return await _close(websocket, 404, f"campaign {campaign_id!r} not found")
    wanted = {t.strip() for t in types.split(",")} if types else None

    def accept(event: Event) -> str | None:
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

    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def on_change() -> None:
        try:
            loop.call_soon_threadsafe(changed.set)
        except RuntimeError:  # the loop is gone
            pass

    def recheck() -> tuple[int, str] | None:
        """Re-read token, account and memberships: (status, why) to close, or None."""
        now = svc.auth.authenticate(tok)
        if now is None:
            return 401, "token revoked or expired, or account deactivated"
        access.refresh(now)
        if campaign_pid is not None and not access.can_read(campaign_pid):
            return 404, f"campaign {campaign_id!r} not found"
        return None

    svc.auth.listeners.add(on_change)
    svc.members.listeners.add(on_change)
    sub = svc.bus.subscribe(loop, accept)
    receiver = getter = waiter = None
    try:
        await websocket.send_text(json.dumps({"type": "hello", "user": p.name, "role": p.role,
                                              "filters": {"campaign_id": campaign_id, "instrument": instrument,
                                                          "types": sorted(wanted) if wanted else None}}))
        receiver = asyncio.ensure_future(websocket.receive_text())
        getter = asyncio.ensure_future(sub.queue.get())
        waiter = asyncio.ensure_future(changed.wait())
        checked = time.monotonic()
        while True:
            timeout = max(0.0, RECHECK_S - (time.monotonic() - checked))
            done, _ = await asyncio.wait({getter, receiver, waiter}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if waiter in done or time.monotonic() - checked >= RECHECK_S:
                changed.clear()
                if waiter in done:
                    waiter = asyncio.ensure_future(changed.wait())
                verdict = await asyncio.to_thread(recheck)
                checked = time.monotonic()
                if verdict is not None:
                    return await _close(websocket, *verdict)
            if getter in done:
                event, _ = getter.result()
                text = accept(event)  # again, with the view as it is now
                if text is not None:
                    await websocket.send_text(text)
                getter = asyncio.ensure_future(sub.queue.get())
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
        svc.auth.listeners.discard(on_change)
        svc.members.listeners.discard(on_change)
        for task in (receiver, getter, waiter):
            if task is not None and not task.done():
                task.cancel()
