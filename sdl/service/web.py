"""The web app the service serves at ``/``: plain ES modules, hand-written SVG charts, no
build step and nothing fetched from a CDN (see docs/web-app.md for why).

``PAGE`` is the HTML shell; its scripts and styles are files of this package
(``sdl/service/webapp/``) served at ``/static/`` by :mod:`sdl.service.webapi`, so the page
runs under a strict Content-Security-Policy (no inline script, style or handler).
"""

from pathlib import Path

WEBAPP = Path(__file__).parent / "webapp"
PAGE = (WEBAPP / "index.html").read_text(encoding="utf-8")
