"""Reading files back through the gateway: status and history, presigned URLs, content from S3
or from the PostgreSQL fallback with the same headers, a missing object reported corrupted
(seed 004), and the owner's list, newest first with a cursor."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from services.gateway.keys import create_key
from shared.adapters.storage import S3ObjectStorage
from shared.events import FileCorrupted, parse_event
from tests.integration.gateway.support import (
    PREFIX,
    Gateway,
    Who,
    _owner,
    error_of,
    insert_fallback,
    insert_file,
    jpeg,
    next_event,
)

pytestmark = pytest.mark.integration


async def test_status_history_presigned_urls_and_content(
    gw: Gateway, pool: asyncpg.Pool, storage: S3ObjectStorage, alice: Who
) -> None:
    owner, headers = alice
    data = jpeg(50_000)
    thumb = b"RIFF\x00\x00\x00\x00WEBPVP8 thumbnail"
    preview = b"\xff\xd8\xff\xe0 preview"
    key = f"{owner}/{uuid.uuid4()}-20250101T000000Z-r_sum_.jpg"
    sha = hashlib.sha256(data).hexdigest()
    # Stored under a type a browser would render: the presigned URL still answers the
    # sniffed type, as an attachment.
    await storage.put_bytes(key, data, sha256_hex=sha, content_type="text/html")
    await storage.put_bytes(
        key + ".thumb-256.webp",
        thumb,
        sha256_hex=hashlib.sha256(thumb).hexdigest(),
        content_type="image/webp",
    )
    await storage.put_bytes(
        key + ".thumb-1024.jpg",
        preview,
        sha256_hex=hashlib.sha256(preview).hexdigest(),
        content_type="image/jpeg",
    )
    thumbnails = [
        {  # a row written before JPEG previews: no content_type, a WebP
            "size_px": 256,
            "key": key + ".thumb-256.webp",
            "width": 32,
            "height": 24,
            "size_bytes": len(thumb),
        },
        {
            "size_px": 1024,
            "key": key + ".thumb-1024.jpg",
            "width": 64,
            "height": 48,
            "size_bytes": len(preview),
            "content_type": "image/jpeg",
        },
    ]
    file_id = await insert_file(
        pool, owner, data=data, name="../résumé.jpg", key=key, thumbnails=thumbnails
    )

    status = await gw.client.get(f"/v1/files/{file_id}", headers=headers)

    assert status.status_code == 200, status.text
    body = status.json()
    assert body["status"] == "available" and body["stored"] is True
    assert (body["sha256"], body["size_bytes"]) == (sha, len(data))
    assert body["metadata"] == {"album": "test"} and body["kind"] == "avatar"
    assert [e["type"] for e in body["history"]] == ["file.received", "file.scanned", "file.stored"]
    assert body["history"][1]["detail"] == "clean"
    async with httpx.AsyncClient() as s3:
        original = await s3.get(body["urls"]["original"])
        assert original.status_code == 200 and original.content == data
        assert original.headers["content-disposition"] == (
            "attachment; filename*=UTF-8''..%2Fr%C3%A9sum%C3%A9.jpg"
        )
        assert original.headers["content-type"] == "image/jpeg"
        thumb_out, preview_out = body["thumbnails"]
        assert (thumb_out["size_px"], thumb_out["width"], thumb_out["height"]) == (256, 32, 24)
        assert (preview_out["size_px"], preview_out["width"], preview_out["height"]) == (
            1024,
            64,
            48,
        )
        for out, data_, content_type in (
            (thumb_out, thumb, "image/webp"),
            (preview_out, preview, "image/jpeg"),
        ):
            assert out["content_type"] == content_type
            fetched = await s3.get(out["url"])
            assert fetched.content == data_
            assert fetched.headers["content-type"] == content_type

    content = await gw.client.get(body["urls"]["content"], headers=headers)
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"] == "image/jpeg"
    assert content.headers["content-length"] == str(len(data))
    assert content.headers["x-sluice-sha256"] == sha
    assert content.headers["etag"] == f'"{sha}"'
    assert content.headers["content-disposition"] == (
        "attachment; filename=\"r_sum_.jpg\"; filename*=UTF-8''..%2Fr%C3%A9sum%C3%A9.jpg"
    )
    assert content.headers["x-content-type-options"] == "nosniff"
    assert content.headers["content-security-policy"] == "sandbox"


async def test_a_range_of_the_content_is_206_from_s3_and_from_the_fallback(
    gw: Gateway, pool: asyncpg.Pool, storage: S3ObjectStorage, alice: Who
) -> None:
    """RFC 9110 ranges: a download resumed (``bytes=first-``, with ``If-Range``), a media
    player's seek, a suffix; a changed file's ``If-Range`` gets all of it; past the end, 416."""
    owner, headers = alice
    data = jpeg(300_000)
    sha = hashlib.sha256(data).hexdigest()
    key = f"{owner}/{uuid.uuid4()}-20250101T000000Z-photo.jpg"
    await storage.put_bytes(key, data, sha256_hex=sha, content_type="image/jpeg")
    stored = await insert_file(pool, owner, data=data, key=key)
    in_fallback = await insert_file(pool, owner, data=data, status="fallback")
    await insert_fallback(pool, in_fallback, owner, data)
    size = len(data)
    for file_id in (stored, in_fallback):
        url = f"/v1/files/{file_id}/content"
        whole = await gw.client.get(url, headers=headers)
        assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
        for asked, first, last in (
            ("bytes=0-1023", 0, 1023),
            ("bytes=123456-", 123456, size - 1),
            ("bytes=-2000", size - 2000, size - 1),
            ("bytes=299000-999999", 299000, size - 1),
        ):
            part = await gw.client.get(
                url, headers={**headers, "Range": asked, "If-Range": f'"{sha}"'}
            )
            assert part.status_code == 206, (file_id, asked, part.text[:200])
            assert part.content == data[first : last + 1], asked
            assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
            assert part.headers["content-length"] == str(last - first + 1)
            assert part.headers["x-sluice-sha256"] == sha  # of the whole file
        changed = await gw.client.get(
            url, headers={**headers, "Range": "bytes=0-9", "If-Range": '"another"'}
        )
        assert changed.status_code == 200 and changed.content == data
        several = await gw.client.get(url, headers={**headers, "Range": "bytes=0-1,5-9"})
        assert several.status_code == 200 and several.content == data
        past = await gw.client.get(url, headers={**headers, "Range": f"bytes={size}-"})
        assert past.status_code == 416, past.text
        assert past.headers["content-range"] == f"bytes */{size}"
        assert error_of(past)[0] == "range_not_satisfiable"
        # HEAD: the headers a GET has, no body (RFC 9110 9.3.2).
        head = await gw.client.head(url, headers=headers)
        assert head.status_code == 200 and head.content == b""
        for name in ("content-length", "content-type", "etag", "x-sluice-sha256"):
            assert head.headers[name] == whole.headers[name], name
        head_part = await gw.client.head(url, headers={**headers, "Range": "bytes=-10"})
        assert head_part.status_code == 206 and head_part.content == b""
        assert head_part.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
    await storage.delete(key)
    lost = await gw.client.head(f"/v1/files/{stored}/content", headers=headers)
    assert lost.status_code == 404


async def test_content_not_stored_is_409_and_missing_object_404(
    gw: Gateway, pool: asyncpg.Pool, alice: Who
) -> None:
    pending = await insert_file(pool, alice[0], data=b"x", status="scanned")
    response = await gw.client.get(f"/v1/files/{pending}/content", headers=alice[1])
    assert response.status_code == 409
    assert error_of(response) == ("not_stored", "not stored yet (status: scanned)")


async def test_missing_object_is_404_and_reported_corrupted_once(
    gw: Gateway, pool: asyncpg.Pool, amqp: AbstractRobustConnection, alice: Who
) -> None:
    channel = await amqp.channel()
    corrupted = await channel.declare_queue(exclusive=True, auto_delete=True)
    await corrupted.bind(f"{PREFIX}.events", "file.corrupted")
    key = f"{alice[0]}/no-such-object"
    gone = await insert_file(pool, alice[0], data=b"x", key=key)

    for _ in range(2):
        response = await gw.client.get(f"/v1/files/{gone}/content", headers=alice[1])
        assert response.status_code == 404
        assert error_of(response)[0] == "object_missing"

    first, second = [parse_event((await next_event(corrupted)).body) for _ in range(2)]
    await channel.close()
    assert isinstance(first, FileCorrupted)
    assert (first.file_id, first.version_number, first.key) == (gone, 1, key)
    assert first.detail == "object missing on read (gateway)"
    assert second.event_id == first.event_id  # the commit stage records it once


async def test_fallback_copy_is_served_from_postgresql_with_the_same_headers(
    gw: Gateway, pool: asyncpg.Pool, alice: Who
) -> None:
    data = jpeg()
    file_id = await insert_file(pool, alice[0], data=data, status="fallback")
    await insert_fallback(pool, file_id, alice[0], data)

    response = await gw.client.get(f"/v1/files/{file_id}/content", headers=alice[1])
    status = (await gw.client.get(f"/v1/files/{file_id}", headers=alice[1])).json()

    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["x-sluice-sha256"] == hashlib.sha256(data).hexdigest()
    assert response.headers["content-disposition"].startswith('attachment; filename="photo.jpg"')
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"
    assert (status["status"], status["stored"], status["storage"]) == (
        "fallback",
        False,
        "postgresql",
    )
    assert status["urls"]["original"] is None
    assert status["urls"]["content"] == f"/v1/files/{file_id}/content"


async def test_list_is_newest_first_with_a_cursor(gw: Gateway, pool: asyncpg.Pool) -> None:
    owner = _owner("dave")
    headers = {"Authorization": f"Bearer {await create_key(pool, owner)}"}
    base = datetime(2025, 1, 1, tzinfo=UTC)
    ids = [
        await insert_file(pool, owner, name=f"{i}.jpg", received_at=base + timedelta(minutes=i))
        for i in range(5)
    ]

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await gw.client.get("/v1/files", headers=headers, params=params)).json()
        seen += [f["file_id"] for f in page["files"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in reversed(ids)]
    too_many = await gw.client.get("/v1/files", headers=headers, params={"limit": 101})
    assert too_many.status_code == 422
    bad_cursor = await gw.client.get("/v1/files", headers=headers, params={"cursor": "@@"})
    assert bad_cursor.status_code == 422
