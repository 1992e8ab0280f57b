"""Bearer authentication: ``Authorization: Bearer slk_...`` → the key's owner.

A missing, malformed, unknown or revoked key is 401 with ``WWW-Authenticate: Bearer`` (RFC 6750
§3). The key is checked before the request body is read, so an unauthenticated upload costs no
spool space.
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


async def require_owner(request: Request, deps: Annotated[GatewayDeps, Depends(get_deps)]) -> str:
    """The owner of the request's API key (a FastAPI dependency).

    Raises:
        ApiError: 401 ``unauthorized`` for a missing, malformed, unknown or revoked key.
        DatabaseUnavailable: PostgreSQL unreachable (answered 503).
    """
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing API key: send `Authorization: Bearer <key>`", error=None)
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized("malformed Authorization header: expected `Bearer <key>`")
    if not keys.is_well_formed(key):
        raise _unauthorized("malformed API key")
    owner = await keys.authenticate(deps.pool, key)
    if owner is None:
        raise _unauthorized("unknown or revoked API key")
    structlog.contextvars.bind_contextvars(owner=owner)
    return owner


Owner = Annotated[str, Depends(require_owner)]
