"""The store stage and the source reader against the real SeaweedFS S3 gateway.

Also pins what the project relies on from the store itself: a PUT or an uploaded part whose
``ChecksumSHA256`` is wrong is refused (BadDigest) and leaves no object behind.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from services.store.handler import Deps, handle
from shared.adapters.sources import SpoolOrS3SourceReader
from shared.adapters.spool import LocalSpool
from shared.adapters.storage import S3ObjectStorage, b64_sha256
from shared.errors import ChecksumMismatch, InvalidSource, SourceMissing, StorageUnavailable
from shared.events import FileReceived, FileScanned, FileStored
from shared.settings import S3Settings
from tests.e2e.pipeline import free_port
from tests.localenv import Local

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
BUCKET = "sluice-test"
SMALL_PARTS = {"multipart_threshold_bytes": 5 * MiB, "part_size_bytes": 5 * MiB}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_settings(local: Local, **overrides: Any) -> S3Settings:
    """Settings for the test bucket on the local SeaweedFS."""
    return local.s3(BUCKET, **{"timeout_s": 10.0, **overrides})


async def _open(settings: S3Settings) -> AsyncIterator[S3ObjectStorage]:
    async with S3ObjectStorage(settings) as store:
        await store.ensure_bucket()
        yield store


@pytest.fixture
async def storage(local: Local) -> AsyncIterator[S3ObjectStorage]:
    async for store in _open(s3_settings(local)):
        yield store


@pytest.fixture
async def multipart_storage(local: Local) -> AsyncIterator[S3ObjectStorage]:
    """Multipart from 5 MiB, in 5 MiB parts (the S3 minimum part size)."""
    async for store in _open(s3_settings(local, **SMALL_PARTS)):
        yield store


@pytest.fixture
def spool(tmp_path: Path) -> LocalSpool:
    return LocalSpool(tmp_path / "spool", chunk_bytes=256 * 1024)


async def spooled(spool: LocalSpool, data: bytes) -> str:
    name = uuid.uuid4().hex
    async with spool.writer(name) as writer:
        await writer.write(data)
        await writer.commit()
    return spool.reference(name)


def scanned(data: bytes, source: str, **overrides: Any) -> FileScanned:
    fields: dict[str, Any] = {
        "file_id": uuid.uuid4(),
        "owner": "alice",
        "source": source,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": "image/jpeg",
        "original_name": "Photo de vacances.jpg",
    }
    fields.update(overrides)
    return FileReceived.new(**fields).follow(
        FileScanned, scanner="ClamAV 1.4.6", signature_version="unknown"
    )


async def store_once(event: FileScanned, spool: LocalSpool, storage: S3ObjectStorage) -> FileStored:
    deps = Deps(
        sources=SpoolOrS3SourceReader(spool, storage),
        storage=storage,
        multipart_threshold_bytes=storage.settings.multipart_threshold_bytes,
    )
    [out] = await handle(event, deps)
    assert isinstance(out, FileStored)
    return out


def pending_uploads(raw_s3: Any, key: str) -> list[Any]:
    answer = raw_s3.list_multipart_uploads(Bucket=BUCKET, Prefix=key)
    return list(answer.get("Uploads", []))


# -- the store stage ---------------------------------------------------------------------------


async def test_stored_object_is_the_source_under_its_key(
    spool: LocalSpool, storage: S3ObjectStorage
) -> None:
    data = (ROOT / "samples" / "photo-rotated.jpg").read_bytes()
    event = scanned(data, await spooled(spool, data))
    out = await store_once(event, spool, storage)

    assert out.bucket == BUCKET
    assert re.fullmatch(
        rf"alice/{event.file_id}-\d{{8}}T\d{{6}}Z-Photo_de_vacances\.jpg", out.key
    ), out.key
    assert out.causation_id == event.event_id
    back = await storage.get_bytes(out.key)
    assert hashlib.sha256(back).hexdigest() == event.sha256
    info = await storage.head(out.key)
    assert info is not None
    assert info.content_type == "image/jpeg"
    assert info.checksum_sha256 == b64_sha256(event.sha256)
    assert await spool.exists(event.source)  # the commit stage removes it, not this one


@pytest.mark.parametrize("size", [300 * 1024, 12 * MiB], ids=["single-put", "multipart"])
async def test_redelivery_does_not_upload_again_and_emits_the_same_event(
    spool: LocalSpool, multipart_storage: S3ObjectStorage, size: int
) -> None:
    data = os.urandom(size)
    event = scanned(data, await spooled(spool, data))
    first = await store_once(event, spool, multipart_storage)
    before = await multipart_storage.head(first.key)
    await spool.delete(event.source)  # cleaned meanwhile: a re-upload could not even read it
    await asyncio.sleep(1.1)  # LastModified has a resolution of one second

    second = await store_once(event, spool, multipart_storage)

    assert second.event_id == first.event_id
    assert second.key == first.key
    after = await multipart_storage.head(first.key)
    assert before is not None and after is not None
    assert after.last_modified == before.last_modified
    assert hashlib.sha256(await multipart_storage.get_bytes(first.key)).digest() == (
        hashlib.sha256(data).digest()
    )


async def test_big_file_goes_multipart_with_per_part_checksums(
    spool: LocalSpool, multipart_storage: S3ObjectStorage
) -> None:
    data = os.urandom(12 * MiB)
    event = scanned(data, await spooled(spool, data), content_type="application/pdf")
    out = await store_once(event, spool, multipart_storage)

    info = await multipart_storage.head(out.key)
    assert info is not None
    assert info.size_bytes == len(data)
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert info.checksum_sha256 == f"{base64.b64encode(composite).decode()}-3"
    assert info.metadata.get("sha256") == event.sha256
    back = await multipart_storage.get_bytes(out.key)
    assert hashlib.sha256(back).hexdigest() == event.sha256


async def test_an_object_that_is_not_the_file_is_replaced(
    spool: LocalSpool, storage: S3ObjectStorage
) -> None:
    data = os.urandom(4096)
    event = scanned(data, await spooled(spool, data))
    out = await store_once(event, spool, storage)
    stale = b"an earlier, different upload"
    await storage.put_bytes(
        out.key, stale, sha256_hex=hashlib.sha256(stale).hexdigest(), content_type="image/jpeg"
    )

    await store_once(event, spool, storage)

    assert await storage.get_bytes(out.key) == data


@pytest.mark.parametrize("size", [4096, 12 * MiB], ids=["single-put", "multipart"])
async def test_wrong_sha256_in_the_event_stores_nothing(
    spool: LocalSpool, multipart_storage: S3ObjectStorage, raw_s3: Any, size: int
) -> None:
    data = os.urandom(size)
    event = scanned(data, await spooled(spool, data), sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ChecksumMismatch):
        await store_once(event, spool, multipart_storage)
    key = f"alice/{event.file_id}-"
    assert [o async for o in multipart_storage.list_objects(key)] == []
    assert pending_uploads(raw_s3, key) == []


async def test_upstream_s3_source_is_copied_under_our_key(
    spool: LocalSpool, storage: S3ObjectStorage
) -> None:
    data = os.urandom(10_000)
    upstream_key = f"upstream/{uuid.uuid4()}.bin"
    await storage.put_bytes(
        upstream_key, data, sha256_hex=hashlib.sha256(data).hexdigest(), content_type="x/y"
    )
    event = scanned(data, f"s3://{BUCKET}/{upstream_key}", content_type="application/pdf")
    out = await store_once(event, spool, storage)
    assert out.key != upstream_key
    assert await storage.get_bytes(out.key) == data


async def test_s3_down_is_retryable(spool: LocalSpool, local: Local) -> None:
    data = b"x" * 100
    event = scanned(data, await spooled(spool, data))
    async with S3ObjectStorage(
        s3_settings(local, endpoint=f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    ) as down:
        with pytest.raises(StorageUnavailable):
            await store_once(event, spool, down)


# -- what SeaweedFS itself verifies ------------------------------------------------------------


async def test_seaweedfs_refuses_a_put_with_a_wrong_sha256(storage: S3ObjectStorage) -> None:
    key = f"checks/{uuid.uuid4()}"
    with pytest.raises(ChecksumMismatch, match="BadDigest"):
        await storage.put_bytes(
            key, b"payload", sha256_hex=hashlib.sha256(b"other").hexdigest(), content_type="x/y"
        )
    assert await storage.head(key) is None


async def test_a_conditional_put_leaves_an_object_that_is_there(storage: S3ObjectStorage) -> None:
    key = f"checks/{uuid.uuid4()}"
    first, second = b"first bytes", b"second bytes"
    assert await storage.put_new(key, first, sha256_hex=sha256(first), content_type="x/y")
    assert not await storage.put_new(key, second, sha256_hex=sha256(second), content_type="x/y")
    assert await storage.get_bytes(key) == first
    with pytest.raises(ChecksumMismatch, match="BadDigest"):  # still verified when written
        await storage.put_new(f"{key}-2", first, sha256_hex=sha256(second), content_type="x/y")
    assert await storage.head(f"{key}-2") is None


def test_seaweedfs_refuses_a_part_with_a_wrong_sha256(raw_s3: Any) -> None:
    key = f"checks/{uuid.uuid4()}"
    upload = raw_s3.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256")
    try:
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            raw_s3.upload_part(
                Bucket=BUCKET,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=1,
                Body=b"p" * 1024,
                ChecksumSHA256=b64_sha256(hashlib.sha256(b"other").hexdigest()),
            )
        assert caught.value.response["Error"]["Code"] == "BadDigest"
    finally:
        raw_s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"])
    with pytest.raises(botocore.exceptions.ClientError):
        raw_s3.head_object(Bucket=BUCKET, Key=key)


# -- the source reader -------------------------------------------------------------------------


async def test_reader_checks_size_and_sha256(spool: LocalSpool, storage: S3ObjectStorage) -> None:
    reader = SpoolOrS3SourceReader(spool, storage)
    data = b"spooled bytes"
    source = await spooled(spool, data)
    sha = hashlib.sha256(data).hexdigest()
    assert await reader.read(source, expected_sha256=sha, expected_size=len(data)) == data
    with pytest.raises(ChecksumMismatch) as caught:
        await reader.read(source, expected_sha256="0" * 64, expected_size=len(data))
    assert caught.value.context["expected"] == "0" * 64
    assert caught.value.context["actual"] == sha
    with pytest.raises(ChecksumMismatch):
        await reader.read(source, expected_sha256=sha, expected_size=len(data) + 1)


async def test_reader_refuses_missing_unknown_and_foreign_sources(
    spool: LocalSpool, storage: S3ObjectStorage
) -> None:
    reader = SpoolOrS3SourceReader(spool, storage, max_bytes=MiB)
    sha = "0" * 64
    with pytest.raises(SourceMissing):
        await reader.read("spool://never-written", expected_sha256=sha, expected_size=1)
    with pytest.raises(SourceMissing):
        await reader.read(f"s3://{BUCKET}/no/such/key", expected_sha256=sha, expected_size=1)
    for bad in ("file:///etc/passwd", "spool://../../etc/passwd", "https://example.com/x"):
        with pytest.raises(InvalidSource):
            await reader.read(bad, expected_sha256=sha, expected_size=1)
    with pytest.raises(InvalidSource, match="bucket"):
        await reader.read("s3://someone-elses-bucket/key", expected_sha256=sha, expected_size=1)
    with pytest.raises(InvalidSource, match="bigger"):
        await reader.read("spool://big", expected_sha256=sha, expected_size=MiB + 1)
    with pytest.raises(SourceMissing):
        [chunk async for chunk in reader.iter_chunks("spool://never-written")]


async def test_reader_streams_spool_and_s3_sources(
    spool: LocalSpool, storage: S3ObjectStorage
) -> None:
    reader = SpoolOrS3SourceReader(spool, storage)
    data = os.urandom(700 * 1024)
    source = await spooled(spool, data)
    chunks = [chunk async for chunk in reader.iter_chunks(source)]
    assert len(chunks) == 3 and b"".join(chunks) == data
    key = f"upstream/{uuid.uuid4()}"
    await storage.put_bytes(
        key, data, sha256_hex=hashlib.sha256(data).hexdigest(), content_type="x/y"
    )
    assert b"".join([c async for c in reader.iter_chunks(f"s3://{BUCKET}/{key}")]) == data
