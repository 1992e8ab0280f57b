"""The server-side copy of ``POST /v1/files/{id}/copy`` on both storage backends: S3
CopyObject on the real SeaweedFS, and the local backend's checked copy. The copy holds the same
bytes with the SHA-256 recorded for it (a HEAD shows it); a copy whose SHA-256 is not the
expected one is refused and leaves nothing; a missing original is SourceMissing."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.adapters.local_storage import LocalObjectStorage
from shared.adapters.signed_urls import UrlSigner
from shared.adapters.storage import S3ObjectStorage, b64_sha256
from shared.errors import ChecksumMismatch, SourceMissing
from shared.ports import ObjectStore
from tests.localenv import FreshBucket, Local

pytestmark = pytest.mark.integration

BUCKET = "sluice-test-copy"
DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 300


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["s3", "local"])
async def store(
    request: pytest.FixtureRequest, local: Local, fresh_bucket: FreshBucket, tmp_path: Path
) -> AsyncIterator[ObjectStore]:
    if request.param == "local":
        signer = UrlSigner(b"k" * 32)
        yield LocalObjectStorage(tmp_path, BUCKET, signer=signer, chunk_bytes=4096)
        return
    fresh_bucket(BUCKET)
    async with S3ObjectStorage(local.s3(BUCKET)) as opened:
        yield opened


async def read(store: ObjectStore, key: str) -> bytes:
    return await store.get_bytes(key)


async def test_a_copy_has_the_same_bytes_and_sha256(store: ObjectStore) -> None:
    source, target = f"alice/{uuid.uuid4()}-a.png", f"alice/{uuid.uuid4()}-b.png"
    await store.put_bytes(source, DATA, sha256_hex=sha(DATA), content_type="image/png")
    await store.copy(
        source, target, sha256_hex=sha(DATA), size_bytes=len(DATA), content_type="image/png"
    )
    assert sha(await read(store, target)) == sha(DATA)
    info = await store.head(target)
    assert info is not None and info.size_bytes == len(DATA)
    assert info.content_type == "image/png"
    # The store keeps the copy's SHA-256 (what the store stage's HEAD checks), or the sha256
    # metadata written with it.
    assert info.checksum_sha256 == b64_sha256(sha(DATA)) or info.metadata["sha256"] == sha(DATA)
    assert sha(await read(store, source)) == sha(DATA)  # the original is untouched


async def test_a_copy_that_is_not_the_expected_sha256_leaves_nothing(store: ObjectStore) -> None:
    source, target = f"alice/{uuid.uuid4()}-a.png", f"alice/{uuid.uuid4()}-b.png"
    await store.put_bytes(source, DATA, sha256_hex=sha(DATA), content_type="image/png")
    with pytest.raises(ChecksumMismatch):
        await store.copy(
            source, target, sha256_hex=sha(b"other"), size_bytes=len(DATA), content_type="image/png"
        )
    assert await store.head(target) is None


async def test_copying_a_missing_object_is_source_missing(store: ObjectStore) -> None:
    with pytest.raises(SourceMissing):
        await store.copy(
            f"alice/{uuid.uuid4()}-gone.png",
            f"alice/{uuid.uuid4()}-b.png",
            sha256_hex=sha(DATA),
            size_bytes=len(DATA),
            content_type="image/png",
        )
