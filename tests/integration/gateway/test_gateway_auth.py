"""API keys and ownership at the gateway: a missing, malformed, unknown or revoked key is 401
(a revoked one within the key cache's TTL); another owner's file, or one not yet recorded, is
404."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from services.gateway.keys import create_key, list_keys, revoke_key
from tests.integration.gateway.support import (
    Gateway,
    MakeSettings,
    Who,
    _owner,
    error_of,
    insert_file,
    jpeg,
    running,
    spool_entries,
    upload,
)

pytestmark = pytest.mark.integration


async def test_missing_malformed_unknown_and_revoked_keys_are_401(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    owner = _owner("carol")
    key = await create_key(pool, owner)
    unknown = "slk_" + "A" * 43
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {unknown}"},
    ]
    for headers in cases:
        for response in (
            await upload(gw, headers, "a.jpg", jpeg(), "image/jpeg"),
            await gw.client.get("/v1/files", headers=headers),
        ):
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert error_of(response)[0] == "unauthorized"

    good = {"Authorization": f"Bearer {key}"}
    assert (await gw.client.get("/v1/files", headers=good)).status_code == 200
    assert [k.key_prefix for k in await list_keys(pool, owner)] == [key[:12]]


async def test_a_revoked_key_stops_working_within_the_key_cache_ttl(
    pool: asyncpg.Pool, make_settings: MakeSettings, tmp_path: Path
) -> None:
    """Verified keys are cached for ``key_cache_ttl_s``: a revoked key still works until its
    cached verification is that old, then gets 401, without a restart."""
    ttl_s = 1.5
    owner = _owner("dave")
    key = await create_key(pool, owner)
    good = {"Authorization": f"Bearer {key}"}
    async with running(make_settings(tmp_path, key_cache_ttl_s=ttl_s)) as gw:
        assert (await gw.client.get("/v1/files", headers=good)).status_code == 200
        verified_at = time.monotonic()
        revoked = await revoke_key(pool, key[:12])
        assert revoked.owner == owner and revoked.revoked_at is not None

        cached = await gw.client.get("/v1/files", headers=good)
        assert time.monotonic() - verified_at < ttl_s, "the machine was too slow to tell"
        assert cached.status_code == 200  # within the TTL: the cached verification holds
        await asyncio.sleep(ttl_s - (time.monotonic() - verified_at) + 0.1)
        after = await upload(gw, good, "a.jpg", jpeg(), "image/jpeg")
        assert after.status_code == 401, after.text
        assert "revoked" in error_of(after)[1]
        assert spool_entries(tmp_path) == []


async def test_another_owners_file_is_404(
    gw: Gateway, pool: asyncpg.Pool, alice: Who, bob: Who
) -> None:
    file_id = await insert_file(pool, alice[0], data=b"x", status="scanned")

    mine = await gw.client.get(f"/v1/files/{file_id}", headers=alice[1])
    assert mine.status_code == 200
    assert (mine.json()["status"], mine.json()["stored"], mine.json()["urls"]) == (
        "scanned",
        False,
        None,
    )
    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        theirs = await gw.client.get(path, headers=bob[1])
        assert theirs.status_code == 404
        assert error_of(theirs) == ("not_found", "unknown file (or not yet recorded)")
    listed = (await gw.client.get("/v1/files", headers=bob[1])).json()["files"]
    assert str(file_id) not in {f["file_id"] for f in listed}


async def test_a_file_not_yet_recorded_is_404(gw: Gateway, alice: Who) -> None:
    response = await upload(gw, alice[1], "a.jpg", jpeg(), "image/jpeg")
    status = await gw.client.get(response.json()["status_url"], headers=alice[1])
    assert status.status_code == 404
    assert "not yet recorded" in error_of(status)[1]
