"""API keys: one owner and one scope per key, stored only as a SHA-256 hash (table ``api_keys``).

A key is ``slk_`` followed by 43 URL-safe Base64 characters (32 random bytes,
``secrets.token_urlsafe``). The database keeps ``sha256(key)`` and the first 12 characters
(``key_prefix``, to recognise a key in lists); the key itself is shown once, at creation.
Lookups go by hash, so no secret is ever compared character by character.

A key has a scope (least privilege; migrations 0003 and 0006): ``upload`` keys upload and read
their owner's files (``/v1``); ``ops:read`` keys read the pipeline status and list, show and
dry-run dead letters (``/ops``); ``ops:admin`` keys do that and also replay and purge them.
Upload keys are refused on ``/ops``, ops keys on ``/v1``.

The gateway keeps the keys it has verified in a :class:`KeyCache` for
``SLUICE_GATEWAY_KEY_CACHE_TTL_S`` (30 s), so uploads go on while PostgreSQL restarts: a key
revoked with ``sluice keys revoke`` stops working within that TTL. While PostgreSQL is
unreachable a cached key is trusted ``SLUICE_GATEWAY_KEY_CACHE_STALE_IF_ERROR_S`` (300 s) longer
(RFC 5861's stale-if-error); a key never seen before gets 503 then.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

import asyncpg
import structlog
from cachetools import TTLCache
from pydantic import TypeAdapter, ValidationError

from services.gateway.repo import db_call
from shared.errors import DatabaseUnavailable, InvalidOwner, UnknownKey
from shared.events import Owner
from shared.telemetry import metrics

log = structlog.get_logger("sluice.gateway")

KEY_PREFIX = "slk_"
#: Characters of a key kept in clear in ``api_keys.key_prefix``.
KEY_PREFIX_CHARS = 12
KEY_PATTERN = re.compile(r"^slk_[A-Za-z0-9_-]{43}$")
_OWNER: TypeAdapter[str] = TypeAdapter(Owner)

Scope = Literal["upload", "ops:read", "ops:admin"]
#: Every scope a key can have (the ``api_keys.scope`` check constraint), least privilege first.
SCOPES: tuple[Scope, ...] = get_args(Scope)
#: The scopes of ops keys: both read ``/ops``; only ``ops:admin`` changes anything there.
OPS_SCOPES: tuple[Scope, ...] = ("ops:read", "ops:admin")


def is_ops_scope(scope: str) -> bool:
    """Whether ``scope`` is an ops key's (``ops:read`` or ``ops:admin``)."""
    return scope in OPS_SCOPES


@dataclass(frozen=True)
class Principal:
    """Who an active key acts for, and what it may do."""

    owner: str
    scope: Scope

    @property
    def is_ops(self) -> bool:
        """Whether the key is an ops key (``ops:read`` or ``ops:admin``)."""
        return is_ops_scope(self.scope)


@dataclass(frozen=True)
class ApiKeyInfo:
    """What is stored about a key (never the key itself)."""

    key_id: uuid.UUID
    owner: str
    scope: Scope
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


def generate_key() -> str:
    """A new key: ``slk_`` + 43 URL-safe Base64 characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    """``sha256(key)``, 32 bytes: what ``api_keys.key_hash`` holds."""
    return hashlib.sha256(key.encode()).digest()


def is_well_formed(key: str) -> bool:
    """Whether ``key`` has the shape of a Sluice key (``slk_`` + 43 URL-safe characters)."""
    return KEY_PATTERN.fullmatch(key) is not None


def validate_owner(owner: str) -> str:
    """``owner`` if it is a valid owner name (the regex of ``shared.events.Owner``).

    Raises:
        InvalidOwner: it is not.
    """
    try:
        return _OWNER.validate_python(owner)
    except ValidationError:
        raise InvalidOwner(
            "owner must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            owner=owner,
        ) from None


async def create_key(pool: asyncpg.Pool, owner: str, scope: Scope = "upload") -> str:
    """Create a key for ``owner`` with ``scope`` and return it; only its hash and prefix are
    stored.

    Raises:
        InvalidOwner: ``owner`` is not a valid owner name.
        ValueError: ``scope`` is not one of :data:`SCOPES`.
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    owner = validate_owner(owner)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
    key = generate_key()
    await db_call(
        lambda: pool.execute(
            "INSERT INTO api_keys (key_id, owner, scope, key_hash, key_prefix)"
            " VALUES ($1, $2, $3, $4, $5)",
            uuid.uuid4(),
            owner,
            scope,
            hash_key(key),
            key[:KEY_PREFIX_CHARS],
        )
    )
    return key


async def lookup_principal(pool: asyncpg.Pool, key: str) -> Principal | None:
    """The owner and scope of an active key, or ``None`` (malformed, unknown or revoked).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    if not is_well_formed(key):
        return None
    row = await db_call(
        lambda: pool.fetchrow(
            "SELECT owner, scope FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            hash_key(key),
        )
    )
    return None if row is None else Principal(owner=row["owner"], scope=row["scope"])


class KeyCache:
    """Keys verified against PostgreSQL, trusted for ``ttl_s`` seconds, and for
    ``stale_if_error_s`` more while PostgreSQL is unreachable.

    Only active keys are cached (by their SHA-256, never in clear), at most ``max_keys`` (least
    recently used first out); an unknown or revoked key is asked of PostgreSQL every time, so a
    new key works at once. ``ttl_s == 0`` turns the cache off.
    """

    def __init__(
        self,
        ttl_s: float,
        stale_if_error_s: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._verified: TTLCache[bytes, tuple[Principal, float]] | None = None
        if ttl_s > 0:
            self._verified = TTLCache(max_keys, ttl=ttl_s + stale_if_error_s, timer=clock)

    async def lookup(self, pool: asyncpg.Pool, key: str) -> Principal | None:
        """The owner and scope of an active key, or ``None`` (malformed, unknown or revoked),
        from the cache while fresh, else from PostgreSQL.

        Raises:
            DatabaseUnavailable: PostgreSQL unreachable and the key not cached within
                ``ttl_s + stale_if_error_s``.
        """
        if self._verified is None:
            return await lookup_principal(pool, key)
        if not is_well_formed(key):
            return None
        digest = hash_key(key)
        cached = self._verified.get(digest)
        if cached is not None and self._clock() - cached[1] < self.ttl_s:
            return cached[0]
        try:
            principal = await lookup_principal(pool, key)
        except DatabaseUnavailable as exc:
            if cached is None:
                raise
            metrics.KEY_CACHE_STALE.inc()
            log.warning(
                "gateway.key_cache_stale",
                error=str(exc),
                age_s=round(self._clock() - cached[1], 1),
                key_prefix=key[:KEY_PREFIX_CHARS],
            )
            return cached[0]
        if principal is None:
            self._verified.pop(digest, None)
        else:
            self._verified[digest] = (principal, self._clock())
        return principal


async def revoke_key(pool: asyncpg.Pool, key_or_id: str) -> ApiKeyInfo:
    """Revoke one active key, named by the key itself, its ``key_id`` or its ``key_prefix``.

    The database row is revoked at once; a gateway that verified the key less than
    ``SLUICE_GATEWAY_KEY_CACHE_TTL_S`` ago still accepts it until that verification is that old
    (:class:`KeyCache`), then answers 401.

    Raises:
        UnknownKey: nothing active matches, or a prefix matches several keys.
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    value: bytes | uuid.UUID | str
    if is_well_formed(key_or_id):
        where, value = "key_hash = $1", hash_key(key_or_id)
    else:
        try:
            where, value = "key_id = $1", uuid.UUID(key_or_id)
        except ValueError:
            where, value = "key_prefix = $1", key_or_id
    query = f"""
        WITH target AS (
            SELECT key_id FROM api_keys WHERE {where} AND revoked_at IS NULL
        )
        UPDATE api_keys SET revoked_at = now()
        WHERE key_id IN (SELECT key_id FROM target) AND (SELECT count(*) FROM target) = 1
        RETURNING key_id, owner, scope, key_prefix, created_at, revoked_at
    """
    row = await db_call(lambda: pool.fetchrow(query, value))
    if row is None:
        raise UnknownKey("no single active key matches", key=key_or_id[:KEY_PREFIX_CHARS])
    return ApiKeyInfo(**dict(row))


async def list_keys(
    pool: asyncpg.Pool, owner: str | None = None, *, include_revoked: bool = False
) -> list[ApiKeyInfo]:
    """Keys, newest first; only ``owner``'s when given; revoked ones only if asked.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    rows = await db_call(
        lambda: pool.fetch(
            """
            SELECT key_id, owner, scope, key_prefix, created_at, revoked_at FROM api_keys
            WHERE ($1::text IS NULL OR owner = $1) AND ($2 OR revoked_at IS NULL)
            ORDER BY created_at DESC, key_id
            """,
            owner,
            include_revoked,
        )
    )
    return [ApiKeyInfo(**dict(row)) for row in rows]


def _like_prefix(text: str) -> str:
    """``text`` as a ``LIKE`` pattern matching what starts with it (``_`` and ``%`` escaped)."""
    escaped = text.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return escaped + "%"


async def find_keys(
    pool: asyncpg.Pool, key_id_or_prefix: str, *, include_revoked: bool = False
) -> list[ApiKeyInfo]:
    """Keys named by ``key_id_or_prefix``, newest first: the key itself (by its hash), its
    ``key_id`` (a UUID), or the start of its ``key_prefix`` (``slk_`` and at least one more
    character; only the first 12 are compared, as only they are stored).

    Several results mean the name is ambiguous; ``sluice keys revoke`` refuses it and lists
    them.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    text = key_id_or_prefix.strip()
    value: bytes | uuid.UUID | str
    if is_well_formed(text):
        where, value = "key_hash = $1", hash_key(text)
    else:
        try:
            where, value = "key_id = $1", uuid.UUID(text)
        except ValueError:
            if not text.startswith(KEY_PREFIX) or len(text) <= len(KEY_PREFIX):
                return []
            where, value = "key_prefix LIKE $1", _like_prefix(text[:KEY_PREFIX_CHARS])
    query = f"""
        SELECT key_id, owner, scope, key_prefix, created_at, revoked_at FROM api_keys
        WHERE {where} AND ($2 OR revoked_at IS NULL)
        ORDER BY created_at DESC, key_id
    """
    rows = await db_call(lambda: pool.fetch(query, value, include_revoked))
    return [ApiKeyInfo(**dict(row)) for row in rows]
