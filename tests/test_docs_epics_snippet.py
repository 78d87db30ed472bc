"""The campaign script in docs/epics.md runs as a newcomer would paste it: in a fresh
interpreter, in an empty folder, with nothing but its own imports (the doc cannot rot)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdl import database

DOC = Path(__file__).resolve().parents[1] / "docs" / "epics.md"
SNIPPET = re.compile(r"<!-- snippet: epics-campaign[^>]*-->\s*```python\n(.*?)```\s*<!-- /snippet -->", re.S)

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(database.test_database_url() is not None,
                       reason="does not use the configured store: run once, in the SQLite pass"),
]


def test_epics_campaign_snippet_runs(tmp_path):
    match = SNIPPET.search(DOC.read_text())
    assert match, "docs/epics.md: the epics-campaign snippet (between its marker comments) is gone"
    script = tmp_path / "epics_campaign.py"
    script.write_text(match.group(1))
    # a newcomer's shell: no port inherited from this test process (the script picks its own
    # free loopback ports within $SDL_CA_PORT_RANGE, if set), no EPICS_PVA_* of ours
    env = {k: v for k, v in os.environ.items()
           if k not in ("EPICS_CA_SERVER_PORT", "SDL_TEST_CA_PORT") and not k.startswith("EPICS_PVA_")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "completed", done.stdout + done.stderr
    assert (tmp_path / "epics-campaign.sqlite").exists()
