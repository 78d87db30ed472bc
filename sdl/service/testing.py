"""Helpers for tests and benchmarks of the service: a real uvicorn server on a free
loopback port with a scratch store, an admin client, users and approved proposals."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

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


def collect_events(client: Client, stop_when: Callable[[dict], bool], connect_timeout: float = 20.0,
                   **filters: Any) -> tuple[threading.Thread, list[dict]]:
    """Listen to the live stream in a thread until ``stop_when(event)``; returns the thread and
    the list the events (each stamped ``_received``) are appended to. Returns once connected."""
    events: list[dict] = []
    connected = threading.Event()

    def run() -> None:
        for ev in client.stream(timeout=5.0, **filters):
            if ev["type"] == "hello":
                connected.set()
                continue
            ev["_received"] = time.time()
            events.append(ev)
            if stop_when(ev):
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    if not connected.wait(connect_timeout):
        raise AssertionError(f"the live stream did not connect within {connect_timeout} s")
    return t, events
