"""The thumbnail stage against the real SeaweedFS S3 gateway: what it stores for each size, under
which key and content type, and what a redelivery answers."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from services.thumbnail.handler import Deps, handle
from services.thumbnail.main import build
from shared.adapters.storage import S3ObjectStorage
from shared.events import FileReceived, FileScanned, FileStored, FileThumbnailed
from shared.imaging.pool import RenderPool
from shared.naming import object_key
from shared.settings import ThumbnailSettings
from tests.integration import crashing_render
from tests.localenv import FreshBucket, Local

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture
async def storage(local: Local, fresh_bucket: FreshBucket) -> AsyncIterator[S3ObjectStorage]:
    async with S3ObjectStorage(local.s3(fresh_bucket("sluice-test-thumbnail"))) as store:
        yield store


async def stored(
    storage: S3ObjectStorage, name: str, content_type: str, data: bytes | None = None
) -> FileStored:
    """``samples/<name>`` (or ``data``) put in the bucket as a file's original; its
    ``file.stored``."""
    data = (SAMPLES / name).read_bytes() if data is None else data
    sha = hashlib.sha256(data).hexdigest()
    file_id, when = uuid.uuid4(), datetime.now(UTC)
    key = object_key("alice", file_id, when, name)
    await storage.put_bytes(key, data, sha256_hex=sha, content_type=content_type)
    received = FileReceived.new(
        file_id=file_id,
        owner="alice",
        received_at=when,
        source=f"spool://{file_id}",
        size_bytes=len(data),
        sha256=sha,
        content_type=content_type,
        original_name=name,
    )
    scanned = received.follow(FileScanned, scanner="ClamAV 1.4.6", signature_version="1")
    return scanned.follow(FileStored, bucket=storage.bucket, key=key)


def deps(storage: S3ObjectStorage, pool: RenderPool | None = None, **settings: Any) -> Deps:
    return Deps(
        storage=storage,
        settings=ThumbnailSettings(**settings),
        renders=asyncio.Semaphore(2),
        pool=pool,
    )


@pytest.mark.parametrize(
    ("name", "content_type", "preview_type", "preview_format"),
    [
        ("photo-rotated.jpg", "image/jpeg", "image/jpeg", "JPEG"),
        ("photo.heic", "image/heic", "image/jpeg", "JPEG"),
        ("photo.png", "image/png", "image/webp", "WEBP"),  # transparent corners
    ],
)
async def test_each_size_is_stored_with_its_content_type_and_found_again(
    storage: S3ObjectStorage, name: str, content_type: str, preview_type: str, preview_format: str
) -> None:
    event = await stored(storage, name, content_type)

    [out] = await handle(event, deps(storage))

    assert isinstance(out, FileThumbnailed) and out.thumbnail_error is None
    small, preview = out.thumbnails
    assert (small.size_px, small.content_type, small.key) == (
        256,
        "image/webp",
        event.key + ".thumb-256.webp",
    )
    extension = "jpg" if preview_type == "image/jpeg" else "webp"
    assert (preview.size_px, preview.content_type, preview.key) == (
        1024,
        preview_type,
        f"{event.key}.thumb-1024.{extension}",
    )
    for thumb, fmt in ((small, "WEBP"), (preview, preview_format)):
        info = await storage.head(thumb.key)
        assert info is not None
        assert (info.content_type, info.size_bytes) == (thumb.content_type, thumb.size_bytes)
        with Image.open(io.BytesIO(await storage.get_bytes(thumb.key))) as image:
            assert image.format == fmt
            assert image.size == (thumb.width, thumb.height)

    # A redelivery finds both objects by their keys and answers the same thumbnails.
    [again] = await handle(event, deps(storage))
    assert isinstance(again, FileThumbnailed) and again.thumbnails == out.thumbnails


async def test_a_lower_jpeg_threshold_makes_both_sizes_jpeg(storage: S3ObjectStorage) -> None:
    event = await stored(storage, "photo.webp", "image/webp")
    [out] = await handle(event, deps(storage, jpeg_min_size_px=128))
    assert isinstance(out, FileThumbnailed)
    assert [(t.key[len(event.key) :], t.content_type) for t in out.thumbnails] == [
        (".thumb-256.jpg", "image/jpeg"),
        (".thumb-1024.jpg", "image/jpeg"),
    ]


async def test_with_render_processes_a_decoder_crash_is_a_thumbnail_error(
    storage: S3ObjectStorage,
) -> None:
    """The stage with its render pool: a photo gets its thumbnails from a child process, and an
    image whose decoder kills its process (``tests/integration/crashing_render.py``) is
    committed with a ``thumbnail_error`` while the worker goes on."""
    pool = RenderPool(
        processes=2, max_tasks_per_child=50, max_crashes=2, render=crashing_render.render
    )
    try:
        photo = await stored(storage, "photo-rotated.jpg", "image/jpeg")
        crasher = await stored(storage, "crash.jpg", "image/jpeg", data=b"abort")
        [good], [bad] = await asyncio.gather(
            handle(photo, deps(storage, pool)), handle(crasher, deps(storage, pool))
        )
    finally:
        await pool.close()
    assert isinstance(good, FileThumbnailed) and len(good.thumbnails) == 2
    assert isinstance(bad, FileThumbnailed) and bad.thumbnails == ()
    assert bad.thumbnail_error == (
        "decoder crashed: the image killed 2 render processes (content_type=image/jpeg)"
    )


@pytest.mark.parametrize("processes", [0, 1])
async def test_the_stage_built_from_settings_renders_with_or_without_processes(
    local: Local, fresh_bucket: FreshBucket, tmp_path: Path, processes: int
) -> None:
    """``SLUICE_THUMBNAIL_PROCESSES``: 1 renders in a child process, 0 in a thread."""
    bucket = fresh_bucket("sluice-test-thumbnail")
    settings = local.settings(
        tmp_path,
        amqp=local.amqp("unused"),
        database=local.database("unused"),
        s3=local.s3(bucket),
        thumbnail=ThumbnailSettings(processes=processes),
    )
    stage = await build(settings)
    try:
        async with S3ObjectStorage(local.s3(bucket)) as storage:
            event = await stored(storage, "photo-rotated.jpg", "image/jpeg")
        [out] = await stage.handle(event)
    finally:
        assert stage.close is not None
        await stage.close()
    assert isinstance(out, FileThumbnailed)
    assert [(t.width, t.height, t.content_type) for t in out.thumbnails] == [
        (256, 171, "image/webp"),
        (600, 400, "image/jpeg"),
    ]
