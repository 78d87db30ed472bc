"""Helpers for tests and benchmarks of the service: a real uvicorn server on a free
loopback port with a scratch store, an admin client, users and approved proposals."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Iterable

from sdl.client import Client
from sdl.database import scratch_store_url
from sdl.service.server import LiveServer
from sdl.service.settings import InstrumentConfig, ServiceSettings

_names = itertools.count()


def scratch_settings(folder: str | Path, instruments: Iterable[Any] = ("sim-xrd", "pool:p3ht"), **kw: Any
                  ) -> ServiceSettings:
    """Settings for a scratch service: a SQLite file in ``folder`` (or, with
    ``$SDL_TEST_DATABASE_URL`` set, a fresh PostgreSQL database: see
    :func:`sdl.database.scratch_store_url`), instant simulation."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfgs = [InstrumentConfig(name=i) if isinstance(i, str) else
            (i if isinstance(i, InstrumentConfig) else InstrumentConfig(**i)) for i in instruments]
    kw.setdefault("time_scale", 0.0)
    if "store_url" not in kw:
        kw["store_url"] = scratch_store_url(folder / "service.sqlite")
    return ServiceSettings(instruments=cfgs, **kw)


class Lab:
    """A running service and its admin, with shortcuts for users and proposals."""

    def __init__(self, server: LiveServer):
        self.server = server
        self.service = server.service
        self.url = server.url
        self.admin = Client(server.url, server.admin_token)

    def user(self, name: str | None = None, role: str = "user") -> Client:
        name = name or f"u{next(_names)}-{int(time.time() * 1000) % 100000}"
        out = self.admin.create_user(name, role)
        c = Client(self.url, out["token"])
        c.user = out["user"]  # type: ignore[attr-defined]
        return c

    def proposal(self, owner: Client, instruments: list[str], *, kind: str = "proprietary", approve: bool = True,
                 members: list[Client] = (), **kw: Any) -> dict:
        prop = owner.create_proposal(kw.pop("title", f"proposal of {owner.user['name']}"), instruments, kind=kind,
                                     members=[m.user["name"] for m in members], **kw)
        if approve:
            prop = self.admin.approve(prop["id"])
        return prop

    def close(self) -> None:
        self.admin.close()


def start_lab(folder: str | Path, instruments: Iterable[Any] = ("sim-xrd", "pool:p3ht"), **kw: Any) -> Lab:
    server = LiveServer(scratch_settings(folder, instruments, **kw)).start()
    return Lab(server)
