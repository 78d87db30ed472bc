"""The CLI as a newcomer runs it: `sdl demo`, `sdl demo --epics`, `sdl ioc --list`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _sdl(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EPICS_CA_SERVER_PORT"}  # the demo picks its own port
    return subprocess.run([sys.executable, "-m", "sdl.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_demo_over_epics_matches_the_in_process_demo(tmp_path):
    runs = {}
    for label, extra in (("inproc", []), ("epics", ["--epics"])):
        out = tmp_path / label
        res = _sdl("demo", "--budget", "7", "--seed", "3", "--out", str(out), *extra, cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert (out / "convergence.png").stat().st_size > 1000
        runs[label] = json.loads((out / "summary.json").read_text())
    a, b = runs["inproc"], runs["epics"]
    assert len(a["observations"]) == len(b["observations"]) == 7
    assert a["best_trace"] == b["best_trace"]
    assert a["best"]["params"] == pytest.approx(b["best"]["params"])
    assert "--epics" in _sdl("demo", "--help", cwd=tmp_path).stdout


def test_ioc_list_names_motor_record_fields(tmp_path):
    res = _sdl("ioc", "--list", "--prefix", "BL9:", "stage_x", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for field in ("BL9:STAGE:X.VAL", "BL9:STAGE:X.RBV", "BL9:STAGE:X.DMOV", "BL9:STAGE:X.HLM"):
        assert field in res.stdout


def test_demo_rejects_an_unknown_agent_naming_the_field(tmp_path):
    res = _sdl("demo", "--agent", "genius", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert res.returncode == 2
    assert "agent" in res.stderr and "random" in res.stderr
