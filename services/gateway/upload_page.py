"""The upload page (``GET /upload``): a static HTML file, a stylesheet, a script and the vendored
tus-js-client (``static/vendor/tus.min.js``, copied from ``web/`` by ``scripts/vendor-web.sh``);
no build step. docs/uploads.md § The upload page.

The files hold no data, so they are served without a key; the page asks for an API key, keeps it
in the tab's ``sessionStorage`` and sends it as a bearer header to ``/v1/uploads/`` (tus 1.0),
``/v1/files/{id}/events`` (read with ``fetch``, since ``EventSource`` cannot send a header) and
``/v1/files/{id}``.

Content-Security-Policy: scripts, styles and connections from this origin only, no inline script
or style. Images from this origin and from the origin the storage backend's presigned URLs point
at (the thumbnails): that origin is read from a URL the backend presigns, so it follows
``S3_ENDPOINT`` and the client's addressing style (path-style, or the bucket in the host name),
and adds nothing with the local backend, whose signed URLs are this gateway's
``/v1/objects/…``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.ops_page import SECURITY_HEADERS, STATIC_DIR

router = APIRouter(tags=["upload page"], include_in_schema=False)
Deps = Annotated[GatewayDeps, Depends(get_deps)]

#: The page's files, by the name they are served under: (path under ``static/``, media type).
ASSETS = {
    "upload.js": ("upload.js", "text/javascript; charset=utf-8"),
    "sse.js": ("sse.js", "text/javascript; charset=utf-8"),
    "upload.css": ("upload.css", "text/css; charset=utf-8"),
    "tus.min.js": ("vendor/tus.min.js", "text/javascript; charset=utf-8"),
    "icon.svg": ("ops.svg", "image/svg+xml"),
}
#: An object key presigned only to learn the origin of the backend's URLs (never fetched).
_PROBE_KEY = "upload-page/origin-probe"


def image_origin(url: str) -> str | None:
    """The origin (``scheme://host[:port]``) of an absolute ``http(s)`` URL; ``None`` for a
    relative one (this gateway's own, e.g. ``/v1/objects/…``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def content_security_policy(storage_origin: str | None) -> str:
    """The page's CSP: this origin for everything it loads, plus ``storage_origin`` (if any) for
    images."""
    images = "'self'" + (f" {storage_origin}" if storage_origin else "")
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {images}; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


@router.get("/upload")
async def upload_page(deps: Deps) -> FileResponse:
    """The page itself (HTML), with a CSP allowing the storage backend's image origin."""
    probe = await deps.storage.presigned_get_url(_PROBE_KEY, 60)
    headers = {
        **SECURITY_HEADERS,
        "Content-Security-Policy": content_security_policy(image_origin(probe)),
    }
    return FileResponse(
        STATIC_DIR / "upload.html", media_type="text/html; charset=utf-8", headers=headers
    )


@router.get("/upload/static/{name}")
async def upload_asset(name: str) -> FileResponse:
    """The page's script, stylesheet, icon or vendored library; 404 for anything else."""
    asset = ASSETS.get(name)
    if asset is None:
        raise HTTPException(404, f"no asset {name}")
    path, media_type = asset
    return FileResponse(STATIC_DIR / path, media_type=media_type, headers=SECURITY_HEADERS)
