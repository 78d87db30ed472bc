"""The HTML the service serves, each with a Content-Security-Policy that allows only
what that page needs: the web app's own script and style files (this origin), and the
API reference (Swagger UI) from files of an installed package (``fastapi-offline``),
never a CDN, since the web page keeps the token in this origin's storage."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_STATIC = "/docs-static"


def _hashes(html: str, tag: str) -> list[str]:
    out = []
    for body in re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        out.append(f"'sha256-{digest}'")
    return out


def csp_for(html: str, *, scripts: str = "", styles: str = "", extra: str = "") -> str:
    """A CSP that allows ``html``'s own inline scripts and styles (by hash) and nothing else."""
    script = " ".join([*_hashes(html, "script"), scripts]).strip() or "'none'"
    style = " ".join([*_hashes(html, "style"), styles]).strip() or "'none'"
    return (f"default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; img-src 'self' data:; "
            f"frame-ancestors 'none'; base-uri 'none'; form-action 'self'{extra}")


def page_response() -> HTMLResponse:
    from sdl.service.web import PAGE

    return HTMLResponse(PAGE, headers={"content-security-policy": _PAGE_CSP()})


_cache: dict[str, str] = {}


def _PAGE_CSP() -> str:  # noqa: N802 - a constant, computed once
    if "page" not in _cache:
        from sdl.service.web import PAGE

        # the web app's scripts and styles are files of the package served from this origin
        # (sdl/service/webapp, /static/...): no inline script or style at all
        _cache["page"] = csp_for(PAGE, scripts="'self'", styles="'self'")
    return _cache["page"]


def _static_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) with its script and style served from the installed package."""
    app.mount(DOCS_STATIC, StaticFiles(directory=str(_static_dir())), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=app.title + " - API",
                                   swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_STATIC}/favicon.png")
        html = page.body.decode()
        # Swagger UI sets inline styles on its elements: allowed for styles only, never scripts
        csp = csp_for(html, scripts="'self'", styles="'self' 'unsafe-inline'")
        return HTMLResponse(html, headers={"content-security-policy": csp})
