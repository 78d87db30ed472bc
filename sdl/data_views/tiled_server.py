"""An embedded Tiled server (``sdl serve --tiled``): a ``tiled serve config`` child
process on loopback with its own SQLite catalog, file and DuckDB storage in one folder,
sdl's login (:class:`~sdl.data_views.tiled_access.SdlTokenAuthenticator`) and sdl's
read rules (:class:`~sdl.data_views.tiled_access.SdlAccessPolicy`).

The feed's secret and the token-signing key are handed over in the child's
environment, never written to disk. Stopping sdl stops the child; its folder stays,
so the next start serves the same runs.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from sdl.errors import SdlError

FEED_USER = "sdl-feed"


class TiledServerError(SdlError, RuntimeError):
    def __init__(self, message: str):
        self.field = "tiled"
        self.message = message
        super().__init__(f"tiled: {message}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def config(folder: Path, store_url: str, host: str, port: int) -> dict[str, Any]:
    """The Tiled service configuration (``tiled serve config``)."""
    return {
        "authentication": {
            "providers": [{
                "provider": "sdl",
                "authenticator": "sdl.data_views.tiled_access:SdlTokenAuthenticator",
                "args": {"store_url": store_url, "feed_user": FEED_USER, "feed_secret": "${SDL_TILED_FEED_SECRET}"},
            }],
            "tiled_admins": [{"provider": "sdl", "id": FEED_USER}],
            "secret_keys": ["${SDL_TILED_SECRET_KEY}"],
            "allow_anonymous_access": False,
        },
        "database": {"uri": f"sqlite:///{folder / 'auth.sqlite'}", "init_if_not_exists": True},
        "access_control": {
            "access_policy": "sdl.data_views.tiled_access:SdlAccessPolicy",
            "args": {"store_url": store_url},
        },
        "trees": [{
            "path": "/",
            "tree": "catalog",
            "args": {
                "uri": f"sqlite:///{folder / 'catalog.sqlite'}",
                "writable_storage": [str(folder / "data"), f"duckdb:///{folder / 'tables.duckdb'}"],
                "init_if_not_exists": True,
            },
        }],
        "uvicorn": {"host": host, "port": port},
    }


class EmbeddedTiled:
    """Start, watch and stop a Tiled server of sdl's own."""

    def __init__(self, folder: str | Path, store_url: str, host: str = "127.0.0.1", port: int | None = None,
                 log: str | Path | None = None):
        self.folder = Path(folder).expanduser().resolve()
        self.store_url = store_url
        self.host = host
        self.port = port or free_port(host)
        self.feed_secret = secrets.token_urlsafe(32)
        self._key = secrets.token_hex(32)
        self.log_path = Path(log) if log else self.folder / "tiled.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Where this process reaches it (loopback when it listens on every address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "EmbeddedTiled":
        import json

        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "tiled-config.yml"
        # JSON is YAML: no extra dependency to write it
        cfg.write_text(json.dumps(config(self.folder, self.store_url, self.host, self.port), indent=2))
        env = {**os.environ, "SDL_TILED_FEED_SECRET": self.feed_secret, "SDL_TILED_SECRET_KEY": self._key}
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "tiled", "serve", "config", str(cfg)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TiledServerError(f"the Tiled server exited with {self.proc.returncode}; "
                                       f"see {self.log_path}")
            if self.alive():
                return self
            time.sleep(0.2)
        self.stop()
        raise TiledServerError(f"the Tiled server did not answer on {self.url} within {timeout:g} s; "
                               f"see {self.log_path}")

    def alive(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """Kill at once (tests: a server that dies)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def feed_login(self) -> Any:
        """A tiled client logged in as the feed (a Tiled admin)."""
        from sdl.data_views.tiled_access import login

        return login(self.url, FEED_USER, self.feed_secret)
