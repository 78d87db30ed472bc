"""Shared fixtures. Channel Access stays on loopback in every test."""

from __future__ import annotations

from sdl.testing import configure_loopback_ca

# Before anything imports ophyd/pyepics (libca reads the environment once): loopback
# addresses and a CA port of this test process's own, so parallel runs never clash.
configure_loopback_ca()

import pytest  # noqa: E402

from sdl.store import Store, sqlite_url  # noqa: E402


@pytest.fixture
def store(tmp_path):
    s = Store(sqlite_url(tmp_path / "test.sqlite"))
    yield s
    s.close()
