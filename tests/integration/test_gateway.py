"""The gateway against real PostgreSQL, RabbitMQ and SeaweedFS (no mocks of either).

Fixtures start what is missing through ``shared.devservices`` and fail (never skip) when a
service cannot be had. Everything lives under its own names: database ``sluice_test_gateway``,
AMQP prefix ``t_gateway`` (``t_gateway_nr`` for the unroutable test), bucket
``sluice-test-gateway``, a temporary spool directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import socket
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from fastapi import FastAPI
from PIL import Image

from services.gateway.app import create_app, serve
from services.gateway.keys import create_key, list_keys, revoke_key
from shared import devservices
from shared.adapters import db
from shared.adapters.storage import S3ObjectStorage
from shared.errors import GatewayStartError
from shared.events import FileCorrupted, FileReceived, parse_event
from shared.settings import (
    AmqpSettings,
    ClamdSettings,
    DatabaseSettings,
    GatewaySettings,
    LogSettings,
    S3Settings,
    Settings,
    SpoolSettings,
    ThumbnailSettings,
)
from shared.topology import Topology
from tests.e2e.pipeline import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DB_URL = "postgresql://postgres@127.0.0.1:5432/sluice_test_gateway"
PREFIX = "t_gateway"
BUCKET = "sluice-test-gateway"
MiB = 1024 * 1024


def make_settings(
    spool_dir: Path, *, amqp_url: str = AMQP_URL, prefix: str = PREFIX, port: int = 8080
) -> Settings:
    """Settings built in code (the environment is not read for anything that matters)."""
    return Settings(
        amqp=AmqpSettings(url=amqp_url, prefix=prefix, publish_timeout_s=3.0),
        s3=S3Settings(
            endpoint="http://127.0.0.1:8333",
            access_key="sluice",
            secret_key="sluice-secret-key",
            bucket_name=BUCKET,
            presign_ttl_s=120,
        ),
        database=DatabaseSettings(url=DB_URL, pool_max_size=4),
        spool=SpoolSettings(dir=spool_dir),
        clamd=ClamdSettings(),
        gateway=GatewaySettings(host="127.0.0.1", port=port),
        thumbnail=ThumbnailSettings(),
        log=LogSettings(format="json", level="warning"),
    )


def jpeg(size: int = 0) -> bytes:
    """A real JPEG, padded after its end marker to ``size`` bytes (libmagic still says JPEG)."""
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 80, 40)).save(out, "JPEG")
    data = out.getvalue()
    return data + os.urandom(max(0, size - len(data)))


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    return out.getvalue()


def pdf(size: int = 0) -> bytes:
    data = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    return data + b"%" * max(0, size - len(data))


def multipart(
    parts: list[tuple[bytes, bytes | None, bytes | None, bytes]], boundary: bytes = b"sLuIcE"
) -> tuple[bytes, dict[str, str]]:
    """A hand-built body from ``(name, filename, content_type, data)`` parts (raw bytes, so a
    filename can hold what an HTTP client would escape)."""
    body = b""
    for name, filename, content_type, data in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        if content_type is not None:
            body += b"Content-Type: " + content_type + b"\r\n"
        body += b"\r\n" + data + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


def spool_entries(spool_dir: Path) -> list[str]:
    """Spooled files, leaving out the empty ``.abandoned`` tombstones of 503 answers."""
    return sorted(p.name for p in spool_dir.iterdir() if not p.name.endswith(".abandoned"))


def tombstones(spool_dir: Path) -> list[str]:
    return sorted(p.name for p in spool_dir.iterdir() if p.name.endswith(".abandoned"))


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    spool_dir: Path


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dev_services() -> None:
    """RabbitMQ, PostgreSQL and SeaweedFS healthy (started if needed) and the test bucket made;
    raises ServiceStartError, failing every test, when one cannot be had."""
    devservices.up(devservices.DevServicesConfig(state_dir=REPO / ".sluice"), buckets=[BUCKET])


@pytest.fixture(scope="session")
async def pool(dev_services: None) -> AsyncIterator[asyncpg.Pool]:
    settings = DatabaseSettings(url=DB_URL)
    await db.ensure_database(settings)
    await asyncio.to_thread(db.migrate, settings)
    pool = await db.create_pool(settings)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def amqp(dev_services: None) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
async def storage(dev_services: None) -> AsyncIterator[S3ObjectStorage]:
    async with S3ObjectStorage(make_settings(Path("/nonexistent")).s3) as opened:
        yield opened


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    """The app with its lifespan run, and an httpx client talking ASGI to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(app, client, settings, settings.spool.dir)


@pytest.fixture(scope="session")
async def gateway(
    pool: asyncpg.Pool, amqp: AbstractRobustConnection, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    async with running(make_settings(tmp_path_factory.mktemp("spool"))) as gw:
        channel = await amqp.channel()
        for stage in ("scan", "commit"):  # the stage queues of this prefix have no consumer
            await (await channel.get_queue(f"{PREFIX}.{stage}")).purge()
        yield gw
        for stage in ("scan", "commit"):
            await (await channel.get_queue(f"{PREFIX}.{stage}")).purge()
        await channel.close()


@pytest.fixture(scope="session")
async def received(
    gateway: Gateway, amqp: AbstractRobustConnection
) -> AsyncIterator[AbstractQueue]:
    """A test queue bound to ``file.received`` on the gateway's exchange."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(f"{PREFIX}.events", "file.received")
    yield queue
    await channel.close()


@pytest.fixture
async def gw(gateway: Gateway, received: AbstractQueue) -> Gateway:
    """The session's gateway with an empty spool and an empty test queue."""
    for entry in gateway.spool_dir.iterdir():
        entry.unlink()
    await received.purge()
    return gateway


def _owner(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
async def alice(pool: asyncpg.Pool) -> tuple[str, dict[str, str]]:
    """An owner and the headers carrying its key."""
    owner = _owner("alice")
    return owner, {"Authorization": f"Bearer {await create_key(pool, owner)}"}


@pytest.fixture(scope="session")
async def bob(pool: asyncpg.Pool) -> tuple[str, dict[str, str]]:
    owner = _owner("bob")
    return owner, {"Authorization": f"Bearer {await create_key(pool, owner)}"}


async def next_event(queue: AbstractQueue, timeout_s: float = 5.0) -> aio_pika.IncomingMessage:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            assert isinstance(message, aio_pika.IncomingMessage)
            return message
        assert asyncio.get_running_loop().time() < deadline, "no file.received event arrived"
        await asyncio.sleep(0.05)


async def upload(
    gw: Gateway,
    headers: dict[str, str],
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    **fields: str,
) -> httpx.Response:
    return await gw.client.post(
        "/v1/files", headers=headers, files={"file": (name, data, content_type)}, data=fields
    )


def error_of(response: httpx.Response) -> tuple[str, str]:
    body = response.json()
    return body["error"]["code"], body["error"]["message"]


async def insert_file(
    pool: asyncpg.Pool,
    owner: str,
    *,
    data: bytes = b"",
    name: str = "photo.jpg",
    status: str = "available",
    key: str | None = None,
    thumbnails: list[dict[str, Any]] | None = None,
    received_at: datetime | None = None,
) -> uuid.UUID:
    """Rows as the commit consumer would write them: file, current version, two events."""
    file_id = uuid.uuid4()
    at = received_at or datetime.now(UTC)
    sha = hashlib.sha256(data).hexdigest()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, kind, metadata,"
            " status, received_at) VALUES ($1, $2, $3, 'image/jpeg', 'avatar', $4, $5, $6)",
            file_id,
            owner,
            name,
            {"album": "test"},
            status,
            at,
        )
        await conn.execute(
            "INSERT INTO file_versions (file_id, version_number, status, size_bytes, sha256,"
            " source, bucket, object_key, thumbnails)"
            " VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8)",
            file_id,
            status,
            len(data),
            sha,
            f"spool://{file_id}",
            BUCKET if key else None,
            key,
            thumbnails or [],
        )
        for offset, (kind, detail) in enumerate(
            [("file.received", None), ("file.scanned", "clean"), ("file.stored", None)]
        ):
            await conn.execute(
                "INSERT INTO file_events (event_id, file_id, version_number, event_type,"
                " occurred_at, detail, payload) VALUES ($1, $2, 1, $3, $4, $5, '{}')",
                uuid.uuid4(),
                file_id,
                kind,
                at + timedelta(seconds=offset),
                detail,
            )
    return file_id


Who = tuple[str, dict[str, str]]


# -- uploads -----------------------------------------------------------------------------------


async def test_upload_is_spooled_published_and_accepted(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    owner, headers = alice
    data = jpeg(300_000)
    response = await upload(
        gw, headers, "holiday.jpg", data, "image/jpeg", kind="avatar", metadata='{"album": "x"}'
    )

    assert response.status_code == 202, response.text
    body = response.json()
    file_id = body["file_id"]
    assert body == {
        "file_id": file_id,
        "status": "received",
        "status_url": f"/v1/files/{file_id}",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "content_type": "image/jpeg",
        "original_name": "holiday.jpg",
    }
    assert response.headers["location"] == f"/v1/files/{file_id}"
    message = await next_event(received)
    event = parse_event(message.body)
    assert isinstance(event, FileReceived)
    assert message.message_id == str(event.event_id)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert str(event.file_id) == file_id
    assert (event.owner, event.original_name, event.kind) == (owner, "holiday.jpg", "avatar")
    assert event.metadata == {"album": "x"}
    assert event.sha256 == hashlib.sha256(data).hexdigest() and event.size_bytes == len(data)
    assert event.content_type == "image/jpeg" and event.source == f"spool://{file_id}"
    assert spool_entries(gw.spool_dir) == [file_id]
    assert (gw.spool_dir / file_id).read_bytes() == data


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("scan.pdf", pdf(4 * MiB), "application/pdf"),
        ("pic.PNG", png(), "image/png"),
        ("pic.jpeg", jpeg(), "image/jpg"),
        ("pic.gif", None, "image/gif"),
        ("pic.webp", None, "image/webp"),
        ("pic.heic", None, "image/heic"),
    ],
)
async def test_every_policy_type_is_accepted(
    gw: Gateway, alice: Who, name: str, data: bytes | None, content_type: str
) -> None:
    if data is None:
        fmt = {"gif": "GIF", "webp": "WEBP", "heic": "HEIF"}[name.rsplit(".", 1)[1]]
        if fmt == "HEIF":
            import pillow_heif

            pillow_heif.register_heif_opener()
        out = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 200, 30)).save(out, fmt)
        data = out.getvalue()
    response = await upload(gw, alice[1], name, data, content_type)
    assert response.status_code == 202, response.text


async def test_over_the_hard_cap_is_413_and_leaves_nothing(gw: Gateway, alice: Who) -> None:
    response = await upload(gw, alice[1], "big.jpg", jpeg(10 * MiB + 1), "image/jpeg")

    assert response.status_code == 413
    assert error_of(response)[0] == "too_large"
    assert spool_entries(gw.spool_dir) == []  # no file, no .partial


async def test_a_streamed_body_without_length_is_cut_at_the_limit(gw: Gateway, alice: Who) -> None:
    head, headers = multipart([(b"file", b"big.jpg", b"image/jpeg", jpeg())])
    opening, closing = head.split(b"\r\n--sLuIcE--")
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield opening[:-2]
        for _ in range(40):  # 40 x 512 KiB = 20 MiB offered
            sent += 512 * 1024
            yield b"\0" * (512 * 1024)
        yield b"\r\n--sLuIcE--" + closing

    response = await gw.client.post("/v1/files", headers={**alice[1], **headers}, content=body())
    assert response.status_code == 413
    assert sent <= 11 * MiB  # answered as soon as the limit was passed, not at the end
    assert spool_entries(gw.spool_dir) == []


async def test_pdf_limit_is_5_mib_while_a_6_mib_jpeg_is_fine(gw: Gateway, alice: Who) -> None:
    too_big = await upload(gw, alice[1], "doc.pdf", pdf(5 * MiB + 1), "application/pdf")
    assert too_big.status_code == 413
    assert "5.0 MiB" in error_of(too_big)[1]
    assert spool_entries(gw.spool_dir) == []

    fits = await upload(gw, alice[1], "doc.pdf", pdf(5 * MiB), "application/pdf")
    assert fits.status_code == 202, fits.text
    photo = await upload(gw, alice[1], "photo.jpg", jpeg(6 * MiB), "image/jpeg")
    assert photo.status_code == 202, photo.text
    assert len(spool_entries(gw.spool_dir)) == 2


@pytest.mark.parametrize(
    ("name", "data", "content_type", "says"),
    [
        ("cv.jpg", pdf(), "application/octet-stream", ["application/pdf", ".jpg"]),
        ("photo.jpg", jpeg(), "image/png", ["image/jpeg", "image/png"]),
        ("notes.txt", b"just some text\n" * 10, "text/plain", [".txt", "text/plain"]),
        ("blob.bin", os.urandom(4096), "application/octet-stream", [".bin"]),
        ("photo", jpeg(), "image/jpeg", ["no extension"]),
        ("fake.png", b"GIF89a" + bytes(64), "image/png", ["image/gif", ".png"]),
        ("page.pdf", b"<html><body>hi</body></html>", "application/pdf", ["text/html"]),
    ],
)
async def test_type_mismatches_are_415_naming_sniffed_and_claimed(
    gw: Gateway, alice: Who, name: str, data: bytes, content_type: str, says: list[str]
) -> None:
    response = await upload(gw, alice[1], name, data, content_type)

    assert response.status_code == 415, response.text
    code, message = error_of(response)
    assert code == "unsupported_type"
    for fragment in says:
        assert fragment in message
    assert spool_entries(gw.spool_dir) == []


async def test_empty_file_is_400(gw: Gateway, alice: Who) -> None:
    response = await upload(gw, alice[1], "empty.jpg", b"", "image/jpeg")
    assert response.status_code == 400
    assert error_of(response) == ("empty_file", "empty file: the `file` part has no bytes")
    assert spool_entries(gw.spool_dir) == []


async def test_missing_file_field_is_422_and_not_multipart_is_415(gw: Gateway, alice: Who) -> None:
    no_file = await gw.client.post("/v1/files", headers=alice[1], files={"kind": (None, "x")})
    assert no_file.status_code == 422
    assert "missing `file` field" in error_of(no_file)[1]

    as_json = await gw.client.post("/v1/files", headers=alice[1], json={"file": "x"})
    assert as_json.status_code == 415
    assert error_of(as_json)[0] == "not_multipart"

    body, headers = multipart([(b"file", b"a.jpg", b"image/jpeg", jpeg())])
    truncated = await gw.client.post(
        "/v1/files", headers={**alice[1], **headers}, content=body[: len(body) // 2]
    )
    assert truncated.status_code == 400
    assert error_of(truncated)[0] == "malformed_multipart"
    assert spool_entries(gw.spool_dir) == []


async def test_bad_form_fields(gw: Gateway, alice: Who) -> None:
    cases = [
        ({"metadata": "[1, 2]"}, 422, "JSON object"),
        ({"metadata": "{not json"}, 422, "not valid JSON"),
        ({"metadata": '{"a": NaN}'}, 422, "not valid JSON"),
        ({"metadata": '{"a": "\\u0000"}'}, 422, "NUL"),
        ({"metadata": json.dumps({"a": "x" * 20_000})}, 413, "metadata"),
        ({"kind": "k" * 65}, 422, "kind"),
    ]
    for fields, status, fragment in cases:
        response = await upload(gw, alice[1], "a.jpg", jpeg(), "image/jpeg", **fields)
        assert response.status_code == status, (fields, response.text)
        assert fragment in error_of(response)[1]
    assert spool_entries(gw.spool_dir) == []


async def test_traversal_name_is_kept_as_a_name_never_used_as_a_path(
    gw: Gateway, received: AbstractQueue, alice: Who, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.getbasetemp()
    before = tree(root)
    data = jpeg()

    response = await upload(gw, alice[1], "../../etc/passwd.jpg", data, "image/jpeg")

    assert response.status_code == 202, response.text
    file_id = response.json()["file_id"]
    event = parse_event((await next_event(received)).body)
    assert event.original_name == "../../etc/passwd.jpg"
    assert tree(root) - before == {str((gw.spool_dir / file_id).relative_to(root))}
    assert not (gw.spool_dir / "../../etc/passwd.jpg").exists()


async def test_nul_and_control_characters_are_dropped_from_names_emoji_kept(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    raw_name = "ph\x00o\x1bto \U0001f4f7\x7f.jpg".encode()
    body, headers = multipart([(b"file", raw_name, b"image/jpeg", jpeg())])

    response = await gw.client.post("/v1/files", headers={**alice[1], **headers}, content=body)

    assert response.status_code == 202, response.text
    assert response.json()["original_name"] == "photo \U0001f4f7.jpg"
    event = parse_event((await next_event(received)).body)
    assert event.original_name == "photo \U0001f4f7.jpg"


async def test_names_over_1024_characters_are_400(gw: Gateway, alice: Who) -> None:
    fits = await upload(gw, alice[1], "\U0001f4f7" * 1020 + ".jpg", jpeg(), "image/jpeg")
    assert fits.status_code == 202, fits.text
    too_long = await upload(gw, alice[1], "a" * 1021 + ".jpg", jpeg(), "image/jpeg")
    assert too_long.status_code == 400
    assert error_of(too_long)[0] == "name_too_long"


# -- auth and ownership ------------------------------------------------------------------------


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
    revoked = await revoke_key(pool, key[:12])
    assert revoked.owner == owner and revoked.revoked_at is not None
    after = await upload(gw, good, "a.jpg", jpeg(), "image/jpeg")
    assert after.status_code == 401
    assert "revoked" in error_of(after)[1]
    assert spool_entries(gw.spool_dir) == []


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


# -- status, list, content ---------------------------------------------------------------------


async def test_status_history_presigned_urls_and_content(
    gw: Gateway, pool: asyncpg.Pool, storage: S3ObjectStorage, alice: Who
) -> None:
    owner, headers = alice
    data = jpeg(50_000)
    thumb = b"RIFF\x00\x00\x00\x00WEBPVP8 thumbnail"
    key = f"{owner}/{uuid.uuid4()}-20250101T000000Z-r_sum_.jpg"
    sha = hashlib.sha256(data).hexdigest()
    await storage.put_bytes(key, data, sha256_hex=sha, content_type="image/jpeg")
    await storage.put_bytes(
        key + ".thumb-256.webp",
        thumb,
        sha256_hex=hashlib.sha256(thumb).hexdigest(),
        content_type="image/webp",
    )
    thumbnails = [
        {
            "size_px": 256,
            "key": key + ".thumb-256.webp",
            "width": 32,
            "height": 24,
            "size_bytes": len(thumb),
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
        assert "attachment" in original.headers.get("content-disposition", "")
        [thumb_out] = body["thumbnails"]
        assert (thumb_out["size_px"], thumb_out["width"], thumb_out["height"]) == (256, 32, 24)
        assert (await s3.get(thumb_out["url"])).content == thumb

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
    await pool.execute(
        "INSERT INTO fallback_blobs (file_id, version_number, owner, content_type, size_bytes,"
        " sha256, data_base64, event, reason) VALUES ($1, 1, $2, 'image/jpeg', $3, $4, $5,"
        " '{}', 'StorageUnavailable after 3 attempts')",
        file_id,
        alice[0],
        len(data),
        hashlib.sha256(data).hexdigest(),
        base64.b64encode(data).decode(),
    )

    response = await gw.client.get(f"/v1/files/{file_id}/content", headers=alice[1])
    status = (await gw.client.get(f"/v1/files/{file_id}", headers=alice[1])).json()

    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["x-sluice-sha256"] == hashlib.sha256(data).hexdigest()
    assert response.headers["content-disposition"].startswith('attachment; filename="photo.jpg"')
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


# -- broker failures ---------------------------------------------------------------------------


class TcpProxy:
    """A TCP relay to RabbitMQ that the test can cut, like a broker going away."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> int:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(*target)
            self.writers += [writer, up_writer]
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection (nothing can reconnect)."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


async def test_broker_down_after_start_is_503_and_the_spool_is_emptied(
    pool: asyncpg.Pool, alice: Who, tmp_path: Path
) -> None:
    proxy = TcpProxy()
    port = await proxy.start()
    settings = make_settings(tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/")
    async with running(settings) as gw:
        ready = await gw.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        await proxy.cut()

        response = await upload(gw, alice[1], "a.jpg", jpeg(100_000), "image/jpeg")

        assert response.status_code == 503, response.text
        assert error_of(response)[0] == "broker_unavailable"
        assert int(response.headers["retry-after"]) > 0
        assert spool_entries(tmp_path) == []
        assert len(tombstones(tmp_path)) == 1  # the scan stage rejects it if the event got out
        not_ready = await gw.client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["broker"] != "ok"
        assert error_of(not_ready) == ("not_ready", "not ready: broker")


async def test_an_unroutable_event_is_503_not_a_silent_202(
    pool: asyncpg.Pool, amqp: AbstractRobustConnection, alice: Who, tmp_path: Path
) -> None:
    """Every queue bound to ``file.received`` is deleted after start: the broker returns the
    mandatory message, the publish fails, and the client must not be told it was accepted."""
    prefix = "t_gateway_nr"
    channel = await amqp.channel()
    try:
        async with running(make_settings(tmp_path, prefix=prefix)) as gw:
            for stage in ("scan", "commit"):
                await channel.queue_delete(f"{prefix}.{stage}")

            response = await upload(gw, alice[1], "a.jpg", jpeg(), "image/jpeg")

            assert response.status_code == 503, response.text
            assert error_of(response)[0] == "broker_unavailable"
            assert spool_entries(tmp_path) == []
            assert len(tombstones(tmp_path)) == 1
    finally:
        await Topology(prefix=prefix).delete(channel)
        await channel.close()


# -- memory, health, serving -------------------------------------------------------------------


async def test_a_large_upload_streams_with_flat_memory(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    size = int(9.5 * MiB)
    chunk = os.urandom(64 * 1024)
    head = jpeg()
    boundary = b"sLuIcE"
    opening = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"'
        b"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    digest = hashlib.sha256(head)

    async def body() -> AsyncIterator[bytes]:
        yield opening + head
        left = size - len(head)
        while left > 0:
            piece = chunk[: min(left, len(chunk))]
            digest.update(piece)
            left -= len(piece)
            yield piece
        yield b"\r\n--" + boundary + b"--\r\n"

    headers = {**alice[1], "Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        response = await gw.client.post("/v1/files", headers=headers, content=body())
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert response.status_code == 202, response.text
    assert response.json()["size_bytes"] == size
    assert response.json()["sha256"] == digest.hexdigest()
    assert (gw.spool_dir / response.json()["file_id"]).stat().st_size == size
    print(f"peak {peak / MiB:.2f} MiB")
    assert peak < 2 * MiB, f"peak Python allocation {peak / MiB:.1f} MiB for a 9.5 MiB upload"


async def test_health_readiness_and_openapi(gw: Gateway) -> None:
    assert (await gw.client.get("/healthz")).json() == {"status": "ok"}
    ready = await gw.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }
    spec = (await gw.client.get("/openapi.json")).json()
    upload_op = spec["paths"]["/v1/files"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    assert {"202", "401", "413", "415", "503"} <= set(upload_op["responses"])
    assert "/v1/files/{file_id}/content" in spec["paths"]
    unknown = await gw.client.get("/nowhere")
    assert unknown.status_code == 404 and error_of(unknown)[0] == "not_found"


def _peak_rss_bytes(reset: bool = False) -> int:
    """This process's peak resident set (VmHWM); ``reset`` restarts it from now (Linux)."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


async def _rss_growth_of_upload(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """Peak RSS growth of this process (real uvicorn + gateway) over one streamed 9.5 MiB
    upload; the client side generates the body piece by piece and keeps none of it."""
    chunk = os.urandom(64 * 1024)

    async def body() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        yield jpeg()
        for _ in range(152):  # 9.5 MiB
            yield chunk
        yield b"\r\n--b--\r\n"

    before = _peak_rss_bytes(reset=True)
    response = await client.post(
        "/v1/files",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
        content=body(),
    )
    assert response.status_code == 202, response.text
    return _peak_rss_bytes() - before


async def test_serve_runs_uvicorn_until_stopped(
    gateway: Gateway, alice: Who, tmp_path: Path
) -> None:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(make_settings(tmp_path, port=port), stop))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(100):
            with contextlib.suppress(httpx.ConnectError):
                if (await client.get("/healthz")).status_code == 200:
                    break
            assert not task.done(), task
            await asyncio.sleep(0.05)
        response = await client.post(
            "/v1/files", headers=alice[1], files={"file": ("a.png", png(), "image/png")}
        )
        assert response.status_code == 202, response.text
        assert spool_entries(tmp_path) == [response.json()["file_id"]]
        oversize = await client.post(
            "/v1/files", headers=alice[1], files={"file": ("b.pdf", pdf(6 * MiB), "")}
        )
        assert oversize.status_code == 413
        growth = [await _rss_growth_of_upload(client, alice[1]) for _ in range(2)]
        assert growth[-1] < 4 * MiB, f"peak RSS grew {growth[-1] / MiB:.1f} MiB for 9.5 MiB"
    stop.set()
    await asyncio.wait_for(task, 15)
    with pytest.raises(httpx.ConnectError):
        await httpx.AsyncClient().get(f"{base}/healthz")


async def test_serve_fails_loudly_when_it_cannot_start(pool: asyncpg.Pool, tmp_path: Path) -> None:
    closed = free_port()
    settings = make_settings(tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{closed}/")
    with pytest.raises(GatewayStartError, match="cannot connect to RabbitMQ"):
        await asyncio.wait_for(serve(settings, asyncio.Event()), 30)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = make_settings(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(GatewayStartError, match="could not start"):
            await asyncio.wait_for(serve(settings, asyncio.Event()), 30)
