"""What wraps the tus routes: CORS and ``Tus-Resumable`` on every answer of ``/v1/uploads``,
``X-HTTP-Method-Override``, and the cleaner of expired uploads.

tus 1.0 (core protocol, "Headers"): "The X-HTTP-Method-Override request header MUST be a string
which MUST be interpreted as the request's method by the Server, if the header is presented.
The actual method of the request MUST be ignored." Clients behind proxies or runtimes that drop
PATCH or DELETE send them as a POST with this header (tus-js-client's ``overridePatchMethod``).
On ``/v1/uploads`` only, the header's method (one of tus's: ``HEAD``, ``PATCH``, ``DELETE``,
``POST``, ``OPTIONS``) replaces the request's; any other value is ``400 invalid_request``.

Browsers send tus requests from pages of other origins: Starlette's ``CORSMiddleware``
answers their preflights and marks answers, for ``/v1/uploads`` only, allowing the tus request
headers and ``Authorization`` and exposing ``Location``, ``Upload-*``, ``Tus-*`` and
``Sluice-File-Id`` (``SLUICE_TUS_CORS_ORIGINS``).
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.errors import error_response
from services.gateway.tus.headers import EXPOSED_HEADERS, REQUEST_HEADERS, VERSION
from shared.adapters.resumable import UploadStore, clean_expired
from shared.telemetry import metrics

log = structlog.get_logger("sluice.gateway")
PREFIX = "/v1/uploads"
#: The methods ``X-HTTP-Method-Override`` may name: those of the tus protocol.
OVERRIDABLE = frozenset({"HEAD", "PATCH", "DELETE", "POST", "OPTIONS"})
_OVERRIDE = b"x-http-method-override"


class TusEdge:
    """ASGI middleware on ``/v1/uploads``: ``X-HTTP-Method-Override``, CORS (when ``origins``)
    and ``Tus-Resumable: 1.0.0`` on every answer."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.inner: ASGIApp = app
        if origins:
            self.inner = CORSMiddleware(
                app,
                allow_origins=list(origins),
                allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=list(REQUEST_HEADERS),
                expose_headers=list(EXPOSED_HEADERS),
                max_age=86400,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_tus(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"tus-resumable", VERSION.encode())]
                message = {**message, "headers": headers}
            await send(message)

        override = next((v for k, v in scope["headers"] if k.lower() == _OVERRIDE), None)
        if override is not None:
            method = override.decode("latin-1").strip().upper()
            if method not in OVERRIDABLE:
                refusal = error_response(
                    400,
                    "invalid_request",
                    f"X-HTTP-Method-Override must be one of {', '.join(sorted(OVERRIDABLE))}",
                )
                await refusal(scope, receive, send_tus)
                return
            scope = {**scope, "method": method}
        await self.inner(scope, receive, send_tus)


async def clean_periodically(store: UploadStore, interval_s: float, stop: asyncio.Event) -> None:
    """Every ``interval_s`` seconds, remove expired uploads (:func:`clean_expired`) until
    ``stop`` is set; a failure (S3 down) is logged and tried again next time."""
    while not stop.is_set():
        try:
            removed = await clean_expired(store)
        except Exception as exc:
            log.warning("gateway.tus_clean_failed", error=repr(exc))
        else:
            if removed:
                metrics.TUS_EXPIRED.inc(len(removed))
                log.info("gateway.tus_expired", removed=len(removed))
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
