"""HTTP errors of the gateway, always answered as ``{"error": {"code": ..., "message": ...}}``.

=====  ===========================  ======================================================
HTTP   code                         when
=====  ===========================  ======================================================
400    ``empty_file``               the ``file`` part has no bytes
400    ``name_too_long``            the file name is longer than 1024 characters
400    ``malformed_multipart``      the body is not parseable multipart/form-data
401    ``unauthorized``             missing, malformed, unknown or revoked API key
403    ``forbidden``                a key of another scope (upload on /ops, ops on /v1,
                                    ops:read on a replay or purge)
404    ``not_found``                no such file for this owner (or not yet recorded)
404    ``object_missing``           the database names an object S3 does not have (seed 004)
408    ``request_timeout``          the next chunk of the body did not come in time
409    ``not_stored``               the file has no stored object (yet, or rejected)
410    ``quarantined``              a rescan found the file infected; never served again
413    ``too_large``                the file or the form passed its size limit
415    ``unsupported_type``         type outside the policy, or sniffed/claimed mismatch
415    ``not_multipart``            the request is not multipart/form-data
422    ``invalid_request``          missing ``file`` field, bad ``kind``/``metadata``, bad query
429    ``too_many_uploads``         the owner's uploads in progress are at their cap (per process)
503    ``outbox_full``              RabbitMQ is away and the event outbox is at its bound
503    ``broker_unavailable``       RabbitMQ unreachable (routes that need it, e.g. ops replay)
503    ``database_unavailable``     PostgreSQL unreachable
503    ``storage_unavailable``      S3 unreachable (with the S3 spool: an upload is refused)
503    ``not_ready``                ``/readyz`` with an ops key: uploads would be refused
507    ``insufficient_storage``     the spool's disk is full or below SLUICE_SPOOL_MIN_FREE_BYTES
=====  ===========================  ======================================================

The ops API adds its own (``services/gateway/ops_api.py``): 400 ``confirm_required`` and 503
``topology_missing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    OutboxFull,
    PolicyRefusal,
    QuarantineUnavailable,
    RetryableError,
    SluiceError,
    SpoolFull,
    StorageUnavailable,
)

log = structlog.get_logger("sluice.gateway")

#: Seconds a client should wait before retrying after a 503 or a 507.
RETRY_AFTER_S = 5


class ApiError(Exception):
    """An error answered to the client as ``status_code`` with a JSON error body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """``{"error": {"code", "message"}, **extra}`` with ``status_code`` and ``headers``."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}, **(extra or {})}
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


#: HTTP status of each upload policy rule (``PolicyRefusal.code``, ``shared.policy``).
POLICY_STATUS: dict[str, int] = {
    "unsupported_type": 415,
    "too_large": 413,
    "name_too_long": 400,
    "invalid_request": 422,
}


def refused(exc: PolicyRefusal) -> ApiError:
    """The HTTP answer to an upload outside the policy: its rule's status and code."""
    return ApiError(POLICY_STATUS.get(exc.code, 422), exc.code, exc.message)


def unavailable(exc: SluiceError) -> ApiError:
    """The 503 for a dependency that is down (with ``Retry-After``)."""
    codes: dict[type[SluiceError], str] = {
        BrokerUnavailable: "broker_unavailable",
        OutboxFull: "outbox_full",
        DatabaseUnavailable: "database_unavailable",
        StorageUnavailable: "storage_unavailable",
        QuarantineUnavailable: "storage_unavailable",
    }
    code = codes.get(type(exc), "unavailable")
    return ApiError(
        503,
        code,
        f"{code.replace('_', ' ')}, try again later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def insufficient_storage(exc: SpoolFull) -> ApiError:
    """The 507 for an upload the spool has no room for (with ``Retry-After``): the message says
    what is free and what was needed, not where the spool is."""
    return ApiError(
        507,
        "insufficient_storage",
        f"{exc.message}; try again later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status_code, exc.code, exc.message, headers=exc.headers, extra=exc.extra
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout"}.get(
        exc.status_code, "http_error"
    )
    return error_response(
        exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}"
        for error in exc.errors()
    )
    return error_response(422, "invalid_request", problems or "invalid request")


async def _sluice_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SluiceError)
    if not isinstance(exc, RetryableError):
        return await _unexpected(_request, exc)
    log.warning("gateway.dependency_failed", error=str(exc), error_type=type(exc).__name__)
    api = insufficient_storage(exc) if isinstance(exc, SpoolFull) else unavailable(exc)
    return error_response(api.status_code, api.code, api.message, headers=api.headers)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("gateway.unexpected_error", error=repr(exc), exc_info=exc)
    return error_response(500, "internal", "internal error")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the JSON error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SluiceError, _sluice_error)
    app.add_exception_handler(Exception, _unexpected)
