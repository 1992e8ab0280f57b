"""What the gateway tests share: the names they use, payloads (real JPEG, PNG and PDF bytes,
hand-built multipart bodies), the app run in process with an httpx client, rows as the commit
stage writes them, and a TCP relay to RabbitMQ that a test can cut.

Names: database ``sluice_test_gateway``, AMQP prefix ``t_gateway`` (``t_gateway_nr`` for the
unroutable test), bucket ``sluice-test-gateway``; each followed by the worker's name when the
suite runs on several workers, since the gateway's modules share one gateway per worker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
from aio_pika.abc import AbstractQueue
from fastapi import FastAPI
from PIL import Image

from services.gateway.app import create_app, serve
from shared.adapters.outbox import OUTBOX_DIR
from shared.settings import Settings
from tests.localenv import worker_name

DATABASE = worker_name("sluice_test_gateway")
PREFIX = worker_name("t_gateway")
UNROUTABLE_PREFIX = worker_name("t_gateway_nr")
BUCKET = worker_name("sluice-test-gateway", "-")
MiB = 1024 * 1024
Who = tuple[str, dict[str, str]]
#: ``make_settings(spool_dir, *, amqp_url=None, prefix=PREFIX, port=8080)`` (the fixture).
MakeSettings = Callable[..., Settings]


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
    """Spooled files, leaving out the empty ``.abandoned`` tombstones of 503 answers and the
    event outbox (``.outbox/``)."""
    return sorted(
        p.name for p in spool_dir.iterdir() if p.is_file() and not p.name.endswith(".abandoned")
    )


def tombstones(spool_dir: Path) -> list[str]:
    return sorted(p.name for p in spool_dir.iterdir() if p.name.endswith(".abandoned"))


def outbox_entries(spool_dir: Path) -> list[str]:
    """The events waiting in the gateway's outbox, oldest first (file names)."""
    outbox = spool_dir / OUTBOX_DIR
    return sorted(p.name for p in outbox.glob("*.json")) if outbox.is_dir() else []


def tree(root: Path) -> set[str]:
    """Every file under ``root`` (relative paths), the outbox's lock file left out."""
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".relay.lock"
    }


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    spool_dir: Path


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    """The app with its lifespan run, and an httpx client talking ASGI to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(app, client, settings, settings.spool.dir)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The gateway served by :func:`~services.gateway.app.serve` (real uvicorn) on
    ``settings.gateway.port``, up: its base URL. Stopped, and its end awaited, on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    base = f"http://127.0.0.1:{settings.gateway.port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.ConnectError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                assert not task.done(), task
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the gateway did not answer at {base}")
        yield base
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _owner(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


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


async def insert_fallback(pool: asyncpg.Pool, file_id: uuid.UUID, owner: str, data: bytes) -> None:
    """The ``fallback_blobs`` row the fallback worker writes for version 1 of ``file_id``
    (unsealed: ``SLUICE_FALLBACK_ENCRYPTION_*`` unset), the bytes Base64."""
    await pool.execute(
        "INSERT INTO fallback_blobs (file_id, version_number, owner, content_type, size_bytes,"
        " sha256, data_base64, event, reason) VALUES ($1, 1, $2, 'image/jpeg', $3, $4, $5,"
        " '{}', 'StorageUnavailable after 3 attempts')",
        file_id,
        owner,
        len(data),
        hashlib.sha256(data).hexdigest(),
        base64.b64encode(data).decode(),
    )


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
    content_type: str = "image/jpeg",
) -> uuid.UUID:
    """Rows as the commit consumer would write them: file, current version, two events."""
    file_id = uuid.uuid4()
    at = received_at or datetime.now(UTC)
    sha = hashlib.sha256(data).hexdigest()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, kind, metadata,"
            " status, received_at) VALUES ($1, $2, $3, $7, 'avatar', $4, $5, $6)",
            file_id,
            owner,
            name,
            {"album": "test"},
            status,
            at,
            content_type,
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
                " occurred_at, detail, payload, seq) VALUES ($1, $2, 1, $3, $4, $5, '{}', $6)",
                uuid.uuid4(),
                file_id,
                kind,
                at + timedelta(seconds=offset),
                detail,
                offset + 1,
            )
    return file_id


class TcpProxy:
    """A TCP relay to RabbitMQ that the test can cut, like a broker going away."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, target: tuple[str, int] = ("127.0.0.1", 5672), port: int = 0) -> int:
        """Listen on ``port`` (0: any free port; the one of a cut proxy: the broker is back)
        and relay each connection to ``target``; the port listened on."""

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

        self.server = await asyncio.start_server(handle, "127.0.0.1", port)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection (nothing can reconnect)."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()
