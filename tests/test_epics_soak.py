"""Stock clients against the soft motor record, as a beamline drives them: back-to-back
moves, null moves, moves to where the motor is, reversals, retargets, stops mid-move and
scans, each client kind in its own process against ``sdl ioc`` (a subprocess, real time).

The short version runs in CI; the full one (20 runs x 500 moves per client, issue 20)
is ``-m slow``. Expected: 0 hangs, 0 callback errors, 0 double and 0 early completions.
"""

from __future__ import annotations

from sdl.testing import configure_loopback_ca, unique_prefix

PORT = configure_loopback_ca()

import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from sdl.sim_devices.ioc import loopback_environment, serve_sim_lab  # noqa: E402
from sdl.sim_devices.ioc.soak import CLIENTS, run_soak  # noqa: E402

#: the motor soak also drives stock ophyd.EpicsMotor after close_stock_race(), as a user's
#: script would (as shipped, the class hangs: tests/test_motor_race.py)
MOTOR_CLIENTS = CLIENTS + ("ophyd-stock-patched",)
BAD = ("hangs", "callback_errors", "double_completions", "early_completions")


@pytest.fixture(scope="module")
def ioc():
    with serve_sim_lab("sim-xrd", seed=0, prefix=unique_prefix("K"), port=PORT, time_scale=1.0,
                       names="motors,detector", mode="process") as served:
        yield served


def _check(results: list[dict]) -> None:
    bad = [r for r in results if any(r.get(k) for k in BAD) or r.get("errors")]
    assert not bad, "\n".join(f"{r['client']} run {r['run']}: " + ", ".join(f"{k}={r.get(k)}" for k in BAD)
                              + f" {r.get('errors')}" for r in bad)


def _env() -> dict[str, str]:
    return {**loopback_environment("127.0.0.1", PORT), "EPICS_CA_SERVER_PORT": str(PORT)}


@pytest.mark.timeout(170)
def test_soak_short(ioc):
    results = run_soak(MOTOR_CLIENTS, runs=1, moves=int(os.environ.get("SDL_SOAK_MOVES", "40")), seed=7,
                       pv=ioc.prefix + "STAGE:X", env=_env(), hang_s=20)
    assert [r["client"] for r in results] == list(MOTOR_CLIENTS)
    assert all(r["moves"] >= 40 for r in results)
    _check(results)


@pytest.mark.timeout(120)
def test_command_soak_short(ioc):
    """DET:ACQUIRE back to back (put-completion + BUSY handshake), overlapping commands too."""
    results = run_soak(CLIENTS, runs=1, moves=40, seed=3, pv=ioc.prefix, env=_env(), hang_s=20,
                       record="detector")
    assert all(r["moves"] == 40 for r in results)
    _check(results)


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_soak_full(ioc):
    """Issue 20's acceptance: 20 runs x 500 back-to-back moves and scans per client."""
    results = run_soak(MOTOR_CLIENTS, runs=20, moves=500, seed=100, pv=ioc.prefix + "STAGE:X", env=_env())
    commands = run_soak(CLIENTS, runs=5, moves=500, seed=200, pv=ioc.prefix, env=_env(), record="detector")
    out = Path(os.environ.get("SDL_ARTIFACTS", "test-artifacts")) / "soak-full.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"motor": results, "detector": commands}, indent=1))  # kept whatever follows
    _summarise(results, "motor")
    _summarise(commands, "detector")
    assert len(results) == 20 * len(MOTOR_CLIENTS)
    _check(results)
    _check(commands)


def _count(value) -> int:
    """A tally's count: a number, or a dict of counts per operation (``ops``)."""
    return sum(_count(v) for v in value.values()) if isinstance(value, dict) else int(value or 0)


def _summarise(results: list[dict], what: str) -> None:
    """Per client totals, printed (``-s``) for the record of a long run."""
    for client in dict.fromkeys(r["client"] for r in results):
        mine = [r for r in results if r["client"] == client]
        total = {k: sum(_count(r.get(k)) for r in mine) for k in ("moves", "ops", *BAD)}
        seconds = sum(float(r.get("seconds") or 0) for r in mine)
        print(f"soak {what} {client}: runs={len(mine)} " + " ".join(f"{k}={v}" for k, v in total.items())
              + f" errors={sum(len(r.get('errors') or []) for r in mine)} seconds={seconds:.0f}")
