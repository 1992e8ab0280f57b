"""The ops page (``GET /ops``): a static HTML file, a stylesheet, a script and an icon; no build
step.

The files hold no data, so they are served without a key; the page asks for an ops key, keeps
it in the tab's ``sessionStorage`` and calls ``/ops/api`` with it (a browser cannot send a
bearer header on navigation). Nothing is fetched from elsewhere: the Content-Security-Policy
allows only this origin, and no inline script or style.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter(tags=["ops"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page's files, by the name they are served under.
ASSETS = {
    "ops.js": "text/javascript; charset=utf-8",
    "ops.css": "text/css; charset=utf-8",
    "ops.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/ops")
async def ops_page() -> FileResponse:
    """The page itself (HTML)."""
    return FileResponse(
        STATIC_DIR / "ops.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


@router.get("/ops/static/{name}")
async def ops_asset(name: str) -> FileResponse:
    """The page's script or stylesheet; 404 for anything else."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no asset {name}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)
