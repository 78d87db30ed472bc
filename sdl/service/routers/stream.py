"""The live stream, ``/api/stream`` (WebSocket); the protocol and its re-authorisation are
in :mod:`sdl.service.stream`."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, WebSocket

from sdl.service.stream import serve_stream

router = APIRouter()


@router.websocket("/api/stream")
async def stream(websocket: WebSocket, token: Optional[str] = None, campaign_id: Optional[str] = None,
                 instrument: Optional[str] = None, types: Optional[str] = None):
    await serve_stream(websocket.app.state.service, websocket, token, campaign_id, instrument, types)
