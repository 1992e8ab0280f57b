"""``sluice keys list`` and ``sluice keys revoke`` run as processes against the real PostgreSQL
(database ``sluice_test_keys_cli``): what an operator sees, and which keys still work."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.gateway.keys import create_key, list_keys, lookup_principal
from shared.adapters import db
from shared.settings import DatabaseSettings
from tests.localenv import FreshDatabase

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = "from services.cli import main; main()"


def sluice(database: DatabaseSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SLUICE_DATABASE_URL": database.url,
        "SLUICE_GATEWAY_KEY_CACHE_TTL_S": "7",
        "SLUICE_LOG_LEVEL": "warning",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-c", APP, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
async def database(fresh_database: FreshDatabase) -> DatabaseSettings:
    return await fresh_database("sluice_test_keys_cli")


@pytest.fixture
async def pool(database: DatabaseSettings) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database)
    try:
        yield pool
    finally:
        await pool.close()


async def test_keys_list_shows_prefixes_and_owners_never_a_secret(
    database: DatabaseSettings, pool: asyncpg.Pool
) -> None:
    alice = await create_key(pool, "alice")
    ops = await create_key(pool, "alice", "ops:read")
    bob = await create_key(pool, "bob")

    everyone = await asyncio.to_thread(sluice, database, "keys", "list")
    assert everyone.returncode == 0, everyone.stderr
    for key in (alice, ops, bob):
        assert key[:12] in everyone.stdout
        assert key[12:20] not in everyone.stdout  # only the stored prefix, never more
    assert "ops:read" in everyone.stdout

    only_bob = await asyncio.to_thread(sluice, database, "keys", "list", "--owner", "bob")
    assert only_bob.returncode == 0, only_bob.stderr
    assert bob[:12] in only_bob.stdout and alice[:12] not in only_bob.stdout

    bad = await asyncio.to_thread(sluice, database, "keys", "list", "--owner", "../x")
    assert bad.returncode == 2 and "owner must be" in bad.stderr


async def test_keys_revoke_by_key_id_and_prefix_and_refuses_an_ambiguous_prefix(
    database: DatabaseSettings, pool: asyncpg.Pool
) -> None:
    keys = [await create_key(pool, "carol") for _ in range(3)]
    infos = {k.key_prefix: k for k in await list_keys(pool, "carol")}

    # "slk_" plus nothing names no key; "slk_" plus a character shared by two keys is ambiguous.
    shared_start = next((a[:5] for a in keys for b in keys if a != b and a[:5] == b[:5]), None)
    if shared_start is None:  # make two keys share a 5-character start
        await pool.execute(
            "UPDATE api_keys SET key_prefix = $1 || substr(key_prefix, 6) WHERE key_prefix = $2",
            keys[0][:5],
            keys[1][:12],
        )
        shared_start = keys[0][:5]
    ambiguous = await asyncio.to_thread(sluice, database, "keys", "revoke", shared_start)
    assert ambiguous.returncode == 1
    assert "nothing revoked" in ambiguous.stderr
    assert len(await list_keys(pool, "carol")) == 3  # still all active
    assert keys[0][:12] in ambiguous.stdout  # the matches are listed

    by_key = await asyncio.to_thread(sluice, database, "keys", "revoke", keys[0])
    assert by_key.returncode == 0, by_key.stderr
    assert "within 7 s" in by_key.stdout
    assert keys[0] not in by_key.stdout + by_key.stderr
    assert await lookup_principal(pool, keys[0]) is None

    by_id = await asyncio.to_thread(
        sluice, database, "keys", "revoke", str(infos[keys[1][:12]].key_id)
    )
    assert by_id.returncode == 0, by_id.stderr
    assert await lookup_principal(pool, keys[1]) is None

    by_prefix = await asyncio.to_thread(sluice, database, "keys", "revoke", keys[2][:12])
    assert by_prefix.returncode == 0, by_prefix.stderr
    assert await lookup_principal(pool, keys[2]) is None

    again = await asyncio.to_thread(sluice, database, "keys", "revoke", keys[2][:12])
    assert again.returncode == 1 and "no active key matches" in again.stderr

    listed = await asyncio.to_thread(sluice, database, "keys", "list", "--revoked")
    assert listed.stdout.count("carol") == 3
