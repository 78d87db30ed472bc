"""Remote cloud-lab access: the HTTP service (FastAPI) with accounts, proposals, a fair
queue per instrument, experiments, campaigns, a live stream and data export.

``create_app(settings)`` builds the app (API, WebSocket stream, web page; the
scheduler and one worker per instrument start with it); ``LiveServer`` runs it with
uvicorn in a thread; ``sdl serve`` runs it in the foreground. See docs/http-api.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabService", "LiveServer", "ServiceSettings", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:  # lazy: importing sdl.service stays cheap
    if name == "create_app":
        from sdl.service.api import create_app

        return create_app
    if name == "LabService":
        from sdl.service.service import LabService

        return LabService
    if name == "LiveServer":
        from sdl.service.server import LiveServer

        return LiveServer
    if name in ("ServiceSettings", "load_settings"):
        from sdl.service import settings

        return getattr(settings, name)
    raise AttributeError(name)
