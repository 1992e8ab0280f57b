"""The gateway's API key cache (services/gateway/keys.py): fresh within its TTL, asked of
PostgreSQL after it, trusted ``stale_if_error_s`` longer only while PostgreSQL is unreachable,
and never caching an unknown or revoked key. PostgreSQL is a stand-in here (pure logic); the
real one is in tests/integration/gateway/test_gateway_auth.py and tests/faults."""

from __future__ import annotations

from typing import Any

import pytest

from services.gateway.keys import KeyCache, Principal, generate_key, hash_key
from shared.errors import DatabaseUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Database:
    """Answers ``fetchrow`` from a table of active keys; ``down`` makes it refuse."""

    def __init__(self) -> None:
        self.active: dict[bytes, dict[str, str]] = {}
        self.down = False
        self.queries = 0

    async def fetchrow(self, _query: str, key_hash: bytes) -> dict[str, str] | None:
        self.queries += 1
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return self.active.get(key_hash)


@pytest.fixture
def parts() -> tuple[Clock, Database, str]:
    database = Database()
    key = generate_key()
    database.active[hash_key(key)] = {"owner": "alice", "scope": "upload"}
    return Clock(), database, key


ALICE = Principal(owner="alice", scope="upload")


async def test_a_verified_key_is_not_asked_again_within_the_ttl(parts: Any) -> None:
    clock, database, key = parts
    cache = KeyCache(30, 300, clock=clock)
    assert await cache.lookup(database, key) == ALICE
    clock.now += 29
    assert await cache.lookup(database, key) == ALICE
    assert database.queries == 1
    clock.now += 2
    assert await cache.lookup(database, key) == ALICE
    assert database.queries == 2


async def test_a_revoked_key_fails_once_the_ttl_has_passed(parts: Any) -> None:
    clock, database, key = parts
    cache = KeyCache(30, 300, clock=clock)
    assert await cache.lookup(database, key) == ALICE
    database.active.clear()  # revoked
    clock.now += 10
    assert await cache.lookup(database, key) == ALICE  # within the TTL: documented
    clock.now += 21
    assert await cache.lookup(database, key) is None
    database.down = True  # and it is not served stale afterwards
    with pytest.raises(DatabaseUnavailable):
        await cache.lookup(database, key)


async def test_while_postgresql_is_down_a_cached_key_is_trusted_until_ttl_plus_stale(
    parts: Any,
) -> None:
    clock, database, key = parts
    cache = KeyCache(30, 300, clock=clock)
    assert await cache.lookup(database, key) == ALICE
    database.down = True
    clock.now += 300
    assert await cache.lookup(database, key) == ALICE
    clock.now += 31  # 331 s: past 30 + 300
    with pytest.raises(DatabaseUnavailable):
        await cache.lookup(database, key)


async def test_a_key_never_seen_gets_no_credit_while_postgresql_is_down(parts: Any) -> None:
    clock, database, key = parts
    cache = KeyCache(30, 300, clock=clock)
    database.down = True
    with pytest.raises(DatabaseUnavailable):
        await cache.lookup(database, key)


async def test_unknown_keys_are_not_cached_so_a_new_key_works_at_once(parts: Any) -> None:
    clock, database, _ = parts
    cache = KeyCache(30, 300, clock=clock)
    other = generate_key()
    assert await cache.lookup(database, other) is None
    database.active[hash_key(other)] = {"owner": "bob", "scope": "ops:read"}
    assert await cache.lookup(database, other) == Principal(owner="bob", scope="ops:read")
    assert await cache.lookup(database, "not-a-key") is None
    assert database.queries == 2  # a malformed key is never asked


async def test_a_zero_ttl_turns_the_cache_off(parts: Any) -> None:
    clock, database, key = parts
    cache = KeyCache(0, 300, clock=clock)
    for _ in range(3):
        assert await cache.lookup(database, key) == ALICE
    assert database.queries == 3
    database.down = True
    with pytest.raises(DatabaseUnavailable):
        await cache.lookup(database, key)
