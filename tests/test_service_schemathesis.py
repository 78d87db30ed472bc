"""Property-based tests of the HTTP API from its own OpenAPI schema (schemathesis),
against a real server: no generated request, valid or not, may cause a server error,
and documented responses must match their schemas.

Schemathesis runs through its own command line (``schemathesis run``) in a subprocess and
reports in JUnit XML, a stable, documented format. Its pytest plugin is not used (and is
disabled in ``pyproject.toml``: ``-p no:schemathesis``): it reaches into pytest internals
that pytest 9.2 changed, which broke this suite on fresh installs (issue 15).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("schemathesis", reason="schemathesis is not installed")

from sdl.service.testing import start_lab  # noqa: E402

#: fuzzing only (valid and invalid data from the schema), a few examples per operation: CI-sized
MAX_EXAMPLES = 3
CHECKS = "not_a_server_error,response_schema_conformance"


def schemathesis_command() -> list[str]:
    """The ``schemathesis`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "schemathesis"
    if script.exists():
        return [str(script)]
    found = shutil.which("schemathesis")
    if found:
        return [found]
    return [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("svc-fuzz"), ("sim-xrd",), rate_limit_per_minute=1e7,
                    rate_limit_burst=100_000)
    yield lab
    lab.close()
    lab.server.stop()


@pytest.fixture(scope="module")
def fuzz_run(lab, tmp_path_factory):
    """One schemathesis run over every operation of the schema; its JUnit report, parsed."""
    out = tmp_path_factory.mktemp("schemathesis")
    junit = out / "junit.xml"
    cmd = [
        *schemathesis_command(), "run", f"{lab.url}/openapi.json",
        "--phases", "fuzzing", "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
        "--seed", "1", "--workers", "1", "--no-shrink", "--request-timeout", "30",
        "--header", f"Authorization: Bearer {lab.server.admin_token}",
        "--report", "junit", "--report-junit-path", str(junit),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=out)
    assert junit.exists(), f"schemathesis wrote no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    cases = ET.parse(junit).getroot().iter("testcase")
    results = []
    for case in cases:
        problems = [el for el in case if el.tag in ("failure", "error")]
        results.append((case.get("name"), [(p.tag, p.get("message") or "", p.text or "") for p in problems]))
    return proc, results


def test_every_operation_was_fuzzed(fuzz_run, lab):
    proc, results = fuzz_run
    paths = lab.admin.get("/openapi.json")["paths"]
    n_operations = sum(1 for item in paths.values() for method in item if method in
                       {"get", "post", "put", "patch", "delete"})
    assert n_operations > 10
    assert len(results) == n_operations, (len(results), n_operations, proc.stdout[-3000:])


def test_api_never_fails_on_generated_requests(fuzz_run):
    proc, results = fuzz_run
    failed = {name: problems for name, problems in results if problems}
    detail = "\n".join(f"{name}: {tag} {msg}\n{text[:1500]}" for name, problems in failed.items()
                       for tag, msg, text in problems)
    assert not failed, f"{len(failed)} operations failed:\n{detail}"
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_fuzzing_reached_the_api(fuzz_run, lab):
    """The generated requests were authenticated and did real work (accounts were created)."""
    users = lab.admin.get("/api/users")
    assert len(users) >= 2
