"""Shared fixtures. Channel Access stays on loopback in every test."""

from __future__ import annotations

import os

os.environ.setdefault("EPICS_CA_AUTO_ADDR_LIST", "NO")
os.environ.setdefault("EPICS_CA_ADDR_LIST", "127.0.0.1")
os.environ.setdefault("EPICS_CAS_INTF_ADDR_LIST", "127.0.0.1")
os.environ.setdefault("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO")
os.environ.setdefault("EPICS_CAS_BEACON_ADDR_LIST", "127.0.0.1")

import pytest  # noqa: E402

from sdl.store import Store, sqlite_url  # noqa: E402


@pytest.fixture
def store(tmp_path):
    s = Store(sqlite_url(tmp_path / "test.sqlite"))
    yield s
    s.close()
