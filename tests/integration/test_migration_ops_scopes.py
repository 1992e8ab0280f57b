"""Migration ``0006_ops_scopes`` on the real PostgreSQL (database
``sluice_test_migration_ops_scopes``): ``ops`` keys become ``ops:admin`` and keep working on
every ops route; rolling back never widens an ``ops:read`` key."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from yoyo import read_migrations

from services.gateway.keys import Principal, generate_key, hash_key, lookup_principal
from shared.adapters import db
from shared.settings import DatabaseSettings
from tests.localenv import FreshDatabase

pytestmark = pytest.mark.integration

DATABASE = "sluice_test_migration_ops_scopes"
MIGRATION = "0006_ops_scopes"


def roll_back(settings: DatabaseSettings) -> None:
    backend = db.migration_backend(settings)
    migrations = read_migrations(str(db.MIGRATIONS_DIR)).filter(lambda m: m.id == MIGRATION)
    with backend.lock():
        backend.rollback_migrations(backend.to_rollback(migrations))


async def insert_key(pool: asyncpg.Pool, owner: str, scope: str, *, revoked: bool = False) -> str:
    """A key stored as ``create_key`` would, with any ``scope`` the schema of the moment takes."""
    key = generate_key()
    await pool.execute(
        "INSERT INTO api_keys (key_id, owner, scope, key_hash, key_prefix, revoked_at)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)",
        uuid.uuid4(),
        owner,
        scope,
        hash_key(key),
        key[:12],
        revoked,
    )
    return key


async def scopes(pool: asyncpg.Pool) -> dict[str, tuple[str, bool]]:
    rows = await pool.fetch("SELECT owner, scope, revoked_at IS NOT NULL AS revoked FROM api_keys")
    return {row["owner"]: (row["scope"], row["revoked"]) for row in rows}


async def test_ops_keys_become_ops_admin_and_a_rollback_never_widens_a_read_key(
    fresh_database: FreshDatabase,
) -> None:
    settings = await fresh_database(DATABASE)
    await asyncio.to_thread(roll_back, settings)  # the schema of 0005: upload or ops
    pool = await db.create_pool(settings)
    try:
        ops_key = await insert_key(pool, "night-shift", "ops")
        await insert_key(pool, "former", "ops", revoked=True)
        upload_key = await insert_key(pool, "acme", "upload")
        with pytest.raises(asyncpg.CheckViolationError):
            await insert_key(pool, "early", "ops:read")

        assert await asyncio.to_thread(db.migrate, settings) == [MIGRATION]

        assert await scopes(pool) == {
            "night-shift": ("ops:admin", False),
            "former": ("ops:admin", True),
            "acme": ("upload", False),
        }
        assert await lookup_principal(pool, ops_key) == Principal("night-shift", "ops:admin")
        assert await lookup_principal(pool, upload_key) == Principal("acme", "upload")
        with pytest.raises(asyncpg.CheckViolationError):
            await insert_key(pool, "legacy", "ops")
        read_key = await insert_key(pool, "day-watch", "ops:read")

        await asyncio.to_thread(roll_back, settings)

        assert await scopes(pool) == {
            "night-shift": ("ops", False),
            "former": ("ops", True),
            "acme": ("upload", False),
            "day-watch": ("ops", True),  # revoked, not turned into a key that replays
        }
        assert await lookup_principal(pool, read_key) is None
    finally:
        await pool.close()
