"""Bearer authentication: ``Authorization: Bearer slk_...`` → the key's owner, per scope.

A missing, malformed, unknown or revoked key is 401 with ``WWW-Authenticate: Bearer`` (RFC 6750
§3). A valid key of the wrong scope is 403 ``forbidden`` with ``error="insufficient_scope"``
(RFC 6750 §3.1), whose ``scope`` names the least scope the route takes (least privilege):
upload keys work only on ``/v1``; ``ops:read`` and ``ops:admin`` keys read ``/ops``, and only
``ops:admin`` keys change anything there (replay, purge).
The key is checked before the request body is read, so an unauthenticated upload costs no
spool space. Verified keys are cached for ``SLUICE_GATEWAY_KEY_CACHE_TTL_S``
(:class:`~services.gateway.keys.KeyCache`).
"""

from __future__ import annotations

from collections.abc import Collection
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


#: The scopes that may read ``/ops`` (status, dead-letter listings, dry runs): every ops key.
OPS_READ: tuple[keys.Scope, ...] = keys.OPS_SCOPES
#: The scopes that may change state on ``/ops`` (replay, purge).
OPS_ADMIN: tuple[keys.Scope, ...] = ("ops:admin",)


def check_scope(principal: keys.Principal, scopes: keys.Scope | Collection[keys.Scope]) -> None:
    """Nothing if ``principal``'s scope is one of ``scopes`` (one scope, or several).

    Raises:
        ApiError: 403 ``forbidden``, ``WWW-Authenticate: Bearer ..., error="insufficient_scope",
            scope="<the least of scopes>"`` (RFC 6750 §3.1).
    """
    wanted = {scopes} if isinstance(scopes, str) else set(scopes)
    accepted = [scope for scope in keys.SCOPES if scope in wanted]
    if principal.scope in accepted:
        return
    raise ApiError(
        403,
        "forbidden",
        f"this is an {principal.scope} key; this route needs an {' or '.join(accepted)} key",
        headers={
            "WWW-Authenticate": f'Bearer realm="sluice", error="insufficient_scope", '
            f'scope="{accepted[0]}"'
        },
    )


async def authenticate_request(
    request: Request, deps: GatewayDeps, scopes: keys.Scope | Collection[keys.Scope]
) -> keys.Principal:
    """The owner and scope of the request's API key, whose scope must be one of ``scopes``
    (one scope, or several: e.g. :data:`OPS_READ` for any ops key).

    Raises:
        ApiError: 401 ``unauthorized`` for a missing, malformed, unknown or revoked key; 403
            ``forbidden`` for a key of another scope (:func:`check_scope`).
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
    check_scope(principal, scopes)
    structlog.contextvars.bind_contextvars(owner=principal.owner)
    return principal


async def require_owner(request: Request, deps: Annotated[GatewayDeps, Depends(get_deps)]) -> str:
    """The owner of the request's ``upload`` key (a FastAPI dependency of the ``/v1`` routes).

    Raises:
        ApiError: 401 (no valid key) or 403 (an ops key); see :func:`authenticate_request`.
        DatabaseUnavailable: PostgreSQL unreachable (answered 503).
    """
    return (await authenticate_request(request, deps, "upload")).owner


async def require_ops_read(
    request: Request, deps: Annotated[GatewayDeps, Depends(get_deps)]
) -> keys.Principal:
    """The request's ops key, ``ops:read`` or ``ops:admin`` (a FastAPI dependency of the
    ``/ops`` routes that change nothing).

    Raises:
        ApiError: 401 (no valid key) or 403 (an upload key); see :func:`authenticate_request`.
        DatabaseUnavailable: PostgreSQL unreachable (answered 503).
    """
    return await authenticate_request(request, deps, OPS_READ)


async def require_ops_admin(
    request: Request, deps: Annotated[GatewayDeps, Depends(get_deps)]
) -> keys.Principal:
    """The request's ``ops:admin`` key (a FastAPI dependency of the ``/ops`` routes that change
    state: replay, purge).

    Raises:
        ApiError: 401 (no valid key) or 403 (an upload or ``ops:read`` key); see
            :func:`authenticate_request`.
        DatabaseUnavailable: PostgreSQL unreachable (answered 503).
    """
    return await authenticate_request(request, deps, OPS_ADMIN)


Owner = Annotated[str, Depends(require_owner)]
OpsReader = Annotated[keys.Principal, Depends(require_ops_read)]
OpsAdmin = Annotated[keys.Principal, Depends(require_ops_admin)]
