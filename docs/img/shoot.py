"""Remake the web-app screenshots of docs/web-app.md from a realistic campaign.

    python docs/img/shoot.py          # needs playwright and a Chromium (apt install chromium)

Starts a scratch service on 127.0.0.1 (sdl.service.testing.start_lab), runs a 30-experiment
`bo` campaign on sim-xrd as a user with an approved proposal, and shoots the campaign page
(model prediction along temperature) and the instruments page, reduced to 64 colours.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def shrink(path: Path) -> None:
    """64 colours: the page is flat colour and text, so the PNG shrinks ~4x and reads the same."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)


def main() -> int:
    from playwright.sync_api import sync_playwright

    from sdl.service.testing import start_lab

    chromium = os.environ.get("SDL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        lab = start_lab(tmp, ("sim-xrd", "pool:p3ht"))
        try:
            user = lab.user("beamline-scientist")
            prop = lab.proposal(user, ["sim-xrd", "pool:p3ht"], title="Ternary oxide films: find the target phase")
            camp = user.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "bo", "budget": 30,
                                                     "seed": 0, "name": "target phase, bo"}, start=True)
            t0 = time.time()
            user.wait_campaign(camp["id"], timeout=900)
            print(f"campaign {camp['id']}: {time.time() - t0:.0f} s")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=ARGS)
                page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
                page.goto(f"{lab.url}/#token={user.token}")
                page.wait_for_selector("#me-name")
                page.evaluate("h => { location.hash = h; }", f"#/campaigns/{camp['id']}")
                page.wait_for_selector("#chart-pred svg")
                page.select_option("#pred-param", "temperature")
                page.wait_for_selector("#chart-pred path.pred-pt")
                time.sleep(0.5)
                for name in ("campaign-bo",):
                    out = HERE / f"{name}.png"
                    page.screenshot(path=str(out), full_page=True)
                    shrink(out)
                    print("wrote", out)
                page.evaluate("h => { location.hash = h; }", "#/instruments")
                page.wait_for_selector("text=sim-xrd")
                time.sleep(0.5)
                out = HERE / "instruments.png"
                page.screenshot(path=str(out), full_page=True)
                shrink(out)
                print("wrote", out)
                browser.close()
        finally:
            lab.close()
            lab.server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
