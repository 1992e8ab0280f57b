"""Reading an original back into a file (``shared.originals.download_original``, what the video
stage gives ffmpeg), on a real object store: the local backend on a real directory, and S3.

The file holds exactly the object's bytes, written a chunk at a time; an object that is not the
event's bytes, or that is missing, leaves no file behind."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.adapters.local_storage import LocalObjectStorage
from shared.adapters.signed_urls import UrlSigner
from shared.adapters.storage import S3ObjectStorage
from shared.errors import ChecksumMismatch, SourceMissing
from shared.events import FileReceived, FileScanned, FileStored
from shared.naming import object_key
from shared.originals import download_original
from tests.localenv import FreshBucket, Local

BUCKET = "sluice-test"


def stored(data: bytes, *, sha256: str | None = None) -> FileStored:
    """The ``file.stored`` of ``data`` (or of bytes hashing to ``sha256``)."""
    received = FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        received_at=datetime(2026, 12, 3, 10, 15, tzinfo=UTC),
        source="spool://x",
        size_bytes=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        content_type="video/mp4",
        original_name="clip.mp4",
    )
    key = object_key("alice", received.file_id, received.received_at, "clip.mp4")
    scanned = received.follow(FileScanned, scanner="ClamAV", signature_version="1")
    return scanned.follow(FileStored, bucket=BUCKET, key=key)


@pytest.fixture
def storage(tmp_path: Path) -> LocalObjectStorage:
    (tmp_path / "store").mkdir()
    return LocalObjectStorage(tmp_path / "store", BUCKET, signer=UrlSigner(b"s" * 32))


async def put(storage: LocalObjectStorage, event: FileStored, data: bytes) -> None:
    await storage.put_bytes(
        event.key, data, sha256_hex=hashlib.sha256(data).hexdigest(), content_type="video/mp4"
    )


async def test_the_file_holds_the_objects_bytes_read_in_chunks(
    storage: LocalObjectStorage, tmp_path: Path
) -> None:
    data = os.urandom(300_000)  # many chunks of 4 KiB, the last one short
    event = stored(data)
    await put(storage, event, data)
    target = tmp_path / "source"
    await download_original(storage, event, target, chunk_bytes=4096)
    assert target.read_bytes() == data


async def test_bytes_that_are_not_the_events_leave_no_file(
    storage: LocalObjectStorage, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    event = stored(data, sha256=hashlib.sha256(b"what the gateway hashed").hexdigest())
    await put(storage, event, data)
    target = tmp_path / "source"
    with pytest.raises(ChecksumMismatch) as caught:
        await download_original(storage, event, target, chunk_bytes=4096)
    assert caught.value.context["actual"] == hashlib.sha256(data).hexdigest()
    assert not target.exists()


async def test_a_missing_object_leaves_no_file(storage: LocalObjectStorage, tmp_path: Path) -> None:
    event = stored(b"never stored")
    target = tmp_path / "source"
    with pytest.raises(SourceMissing):
        await download_original(storage, event, target)
    assert not target.exists()


async def test_an_s3_object_is_read_back_whole(
    local: Local, fresh_bucket: FreshBucket, tmp_path: Path
) -> None:
    bucket = fresh_bucket("sluice-test-originals")
    async with S3ObjectStorage(local.s3(bucket)) as s3:
        data = os.urandom(3 * 1024 * 1024 + 17)
        event = stored(data).model_copy(update={"bucket": bucket})
        await s3.put_bytes(
            event.key, data, sha256_hex=hashlib.sha256(data).hexdigest(), content_type="video/mp4"
        )
        target = tmp_path / "source"
        await download_original(s3, event, target)
        assert target.read_bytes() == data
