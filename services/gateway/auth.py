"""Bearer authentication: ``Authorization: Bearer slk_...`` → the key's owner, per scope.

A missing, malformed, unknown or revoked key is 401 with ``WWW-Authenticate: Bearer`` (RFC 6750
§3). A valid key of the wrong scope is 403 ``forbidden`` with ``error="insufficient_scope"``
(RFC 6750 §3.1): upload keys work only on ``/v1``, ops keys only on ``/ops`` (least privilege).
The key is checked before the request body is read, so an unauthenticated upload costs no
spool space. Verified keys are cached for ``SLUICE_GATEWAY_KEY_CACHE_TTL_S``
(:class:`~services.gateway.keys.KeyCache`).
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request

from services.gateway import keys
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.errors import ApiError


def _unauthorized(message: str, error: str | None = "invalid_token") -> ApiError:
    challenge = 'Bearer realm="sluice"'
    if error:
        challenge += f', error="{error}"'
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


async def authenticate_request(request: Request, deps: GatewayDeps, scope: keys.Scope) -> str:
    """The owner of the request's API key, which must have ``scope``.

    Raises:
        ApiError: 401 ``unauthorized`` for a missing, malformed, unknown or revoked key; 403
            ``forbidden`` for a key of another scope.
        DatabaseUnavailable: PostgreSQL unreachable and the key not in the cache (answered
            503).
    """
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing API key: send `Authorization: Bearer <key>`", error=None)
    auth_scheme, _, key = header.partition(" ")
    key = key.strip()
    if auth_scheme.lower() != "bearer" or not key:
        raise _unauthorized("malformed Authorization header: expected `Bearer <key>`")
    if not keys.is_well_formed(key):
        raise _unauthorized("malformed API key")
    principal = await deps.keys.lookup(deps.pool, key)
    if principal is None:
        raise _unauthorized("unknown or revoked API key")
    if principal.scope != scope:
        raise ApiError(
            403,
            "forbidden",
            f"this is an {principal.scope} key; this route needs an {scope} key",
            headers={
                "WWW-Authenticate": f'Bearer realm="sluice", error="insufficient_scope", '
                f'scope="{scope}"'
            },
        )
    structlog.contextvars.bind_contextvars(owner=principal.owner)
    return principal.owner


async def require_owner(request: Request, deps: Annotated[GatewayDeps, Depends(get_deps)]) -> str:
    """The owner of the request's ``upload`` key (a FastAPI dependency of the ``/v1`` routes).

    Raises:
        ApiError: 401 (no valid key) or 403 (an ops key); see :func:`authenticate_request`.
        DatabaseUnavailable: PostgreSQL unreachable (answered 503).
    """
    return await authenticate_request(request, deps, "upload")


async def require_ops(request: Request, deps: Annotated[GatewayDeps, Depends(get_deps)]) -> str:
    """The owner of the request's ``ops`` key (a FastAPI dependency of the ``/ops`` routes).

    Raises:
        ApiError: 401 (no valid key) or 403 (an upload key); see :func:`authenticate_request`.
        DatabaseUnavailable: PostgreSQL unreachable (answered 503).
    """
    return await authenticate_request(request, deps, "ops")


Owner = Annotated[str, Depends(require_owner)]
Operator = Annotated[str, Depends(require_ops)]
