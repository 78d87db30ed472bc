"""Start and stop the data views a service's settings ask for: the Tiled feed, and the
embedded Tiled server when ``tiled`` is set. Nothing is imported from Tiled unless asked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)


def tiled_folder(settings: Any) -> Path:
    if settings.tiled_folder:
        return Path(settings.tiled_folder)
    from sqlalchemy import make_url

    u = make_url(settings.store_url)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        return Path(u.database).resolve().parent / "tiled"
    return Path("sdl-data/tiled").resolve()


class DataViews:
    """What :meth:`LabService.start` started; :meth:`stop` undoes it."""

    def __init__(self, feed: Any = None, server: Any = None, url: str | None = None):
        self.feed, self.server, self.url = feed, server, url

    def describe(self, staff: bool) -> dict:
        """For ``GET /api/tiled``: where the runs are; the feed's state for staff."""
        out: dict[str, Any] = {"enabled": True, "url": self.url, "embedded": self.server is not None,
                               "login": "your sdl user name, and an sdl API token as the password"
                               if self.server is not None else "as the Tiled server's operator tells you"}
        if staff and self.feed is not None:
            st = self.feed.status()
            out["feed"] = {"connected": st["connected"], "sent": st["sent"], "pending": st["pending"],
                           "outages": st["outages"], "last_error": st["last_error"], "refused": len(st["refused"])}
        return out

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        if self.server is not None:
            self.server.stop()


def start_data_views(svc: Any) -> DataViews | None:
    """The embedded Tiled server and/or the feed, per ``svc.settings``; None when off."""
    s = svc.settings
    if not (s.tiled or s.tiled_url):
        return None
    import importlib.util

    from sdl.data_views.tiled_feed import TiledFeed
    from sdl.data_views.tiled_server import TiledServerError

    missing = [m for m in ("tiled", "bluesky_tiled_plugins") if importlib.util.find_spec(m) is None]
    if missing:
        raise TiledServerError(f"{', '.join(missing)} not installed: pip install 'sdl[tiled]' (or run without "
                               "--tiled / tiled_url)")

    if s.tiled:
        from sdl.data_views.tiled_server import EmbeddedTiled

        server = EmbeddedTiled(tiled_folder(s), s.store_url, host=s.tiled_host, port=s.tiled_port or None).start()
        feed = TiledFeed(svc.store, server.feed_login, proposal_of=svc._run_proposal, ping=server.alive,
                         access_tags=True if s.tiled_access_tags is None else s.tiled_access_tags)
        log.warning("Tiled on %s: every run is fed to it; log in with your sdl user name and an sdl token",
                    server.url)
        return DataViews(feed.start(), server, server.url)

    url = s.tiled_url.rstrip("/")
    key = s.tiled_api_key.get_secret_value() if s.tiled_api_key else None

    def connect() -> Any:
        from tiled.client import from_uri

        return from_uri(url, api_key=key, remember_me=False)

    def ping() -> bool:
        try:
            return httpx.get(f"{url}/api/v1/", timeout=2.0).status_code < 500
        except httpx.HTTPError:
            return False

    feed = TiledFeed(svc.store, connect, proposal_of=svc._run_proposal, ping=ping,
                     access_tags=bool(s.tiled_access_tags))
    return DataViews(feed.start(), None, url)
