"""The audit web console (a sign-in, then what the role may see): the static files in
`static/`, served by the audit service.

    GET /                                       the console (index.html)
    GET /console/{file}                         its stylesheet and ES modules
    GET /console/vendor/cytoscape.esm.min.mjs   the graph library, from the repository's
                                                node_modules (npm `cytoscape`, pinned in
                                                package-lock.json; `scripts/bootstrap` installs it)

The console is plain HTML, CSS and ES modules with no build step, and it reads nothing but the
audit REST API (`/v1/...`): everything it shows, a script can fetch. Nothing is fetched from
anywhere else at run time, which the Content-Security-Policy of the page enforces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
CYTOSCAPE = Path("node_modules/cytoscape/dist/cytoscape.esm.min.mjs")
VENDOR_ENV = "DUL_CONSOLE_CYTOSCAPE"

# Same origin only: the console's own files and the audit API. Cytoscape sets element styles
# through the CSSOM, which a style-src without 'unsafe-inline' would still allow, but it also
# writes style attributes on its canvas container; 'unsafe-inline' for styles only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _roots() -> Iterator[Path]:
    """The repository (this file is `audit/console/__init__.py` in an editable install), then
    the working directory and their parents."""
    seen: set[Path] = set()
    for start in (HERE.parents[1], Path.cwd().resolve()):
        for directory in (start, *start.parents):
            if directory not in seen:
                seen.add(directory)
                yield directory


def find_cytoscape() -> Path | None:
    """The cytoscape ES module: `DUL_CONSOLE_CYTOSCAPE`, else the first node_modules copy."""
    explicit = os.environ.get(VENDOR_ENV)
    if explicit:
        path = Path(explicit)
        return path if path.is_file() else None
    for root in _roots():
        candidate = root / CYTOSCAPE
        if candidate.is_file():
            return candidate
    return None


def mount_console(app: FastAPI) -> None:
    """Adds the console's routes to the audit app (after the API routes, so `/v1/...` keeps
    its own answers, unknown paths included)."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def console_index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers=SECURITY_HEADERS)  # fmt: skip

    @app.api_route(
        f"/console/vendor/{CYTOSCAPE.name}", methods=["GET", "HEAD"], include_in_schema=False
    )
    def console_cytoscape() -> Response:
        path = find_cytoscape()
        if path is None:
            detail = (
                f"the graph library {CYTOSCAPE} is not installed: run scripts/bootstrap "
                f"(npm ci) in the repository, or set {VENDOR_ENV}"
            )
            body = {
                "type": "urn:dul:problem:console_asset_missing",
                "title": "Not found",
                "status": 404,
                "detail": detail,
                "code": "console_asset_missing",
            }
            return JSONResponse(body, status_code=404, media_type="application/problem+json")
        return FileResponse(path, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=3600"})  # fmt: skip

    app.mount("/console", StaticFiles(directory=STATIC), name="console")
