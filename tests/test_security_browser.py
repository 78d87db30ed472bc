"""The web page and the API reference still work under their Content-Security-Policy,
in a real browser (headless Chromium; skipped where it is not installed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sdl.service.testing import start_lab

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("svc-browser"), ["sim-xrd"], start_workers=False)
    yield lab
    lab.close()
    lab.server.stop()


def render(url: str, tmp_path, ms: int = 8000) -> tuple[str, str]:
    """The DOM after the page's scripts ran, and the browser's log (CSP violations land there)."""
    r = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={tmp_path}", "--enable-logging=stderr", "--v=0",
                        f"--virtual-time-budget={ms}", "--dump-dom", url],
                       capture_output=True, text=True, timeout=90)
    return r.stdout, r.stderr


def test_web_page_runs_under_its_csp(lab, tmp_path):
    dom, log = render(f"{lab.url}/#token={lab.server.admin_token}", tmp_path)
    # the web app's module scripts (files of this origin) ran and called the API with the token
    assert "signed in as" in dom and "(admin)" in dom, dom[-1500:]
    assert "Content Security Policy" not in log, log[-2000:]


def test_api_reference_renders_from_local_files(lab, tmp_path):
    dom, log = render(f"{lab.url}/docs", tmp_path)
    assert 'data-path="/api/me"' in dom, dom[:500]  # Swagger UI loaded (from /docs-static) and ran
    assert "Content Security Policy" not in log, log[-2000:]
