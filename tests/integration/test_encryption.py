"""Server-side encryption (``S3_SSE``) against the real SeaweedFS: every way Sluice writes an
object (PutObject, a multipart upload, the quarantine spool's multipart upload, the server-side
copy that promotes a quarantined file) asks for it, and a HEAD reports it.

Also pins what SeaweedFS 4.48 does (docs/storage.md): AES256 is honoured on PUT, copy and
multipart; a copy that does not ask is stored in clear, even from an encrypted source;
``aws:kms`` without a KMS is refused with ``InternalError``, which the start-up check reports
as a configuration error, not an outage.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.encryption import PROBE_PREFIX, verify_encryption
from shared.adapters.spools import Spools, open_spools
from shared.adapters.storage import S3ObjectStorage
from shared.errors import ConfigError
from shared.settings import Settings, SpoolSettings
from tests.localenv import FreshBucket, Local

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BUCKET = "sluice-test-encryption"
QUARANTINE = "sluice-test-encryption-quarantine"


def sse_of(raw_s3: Any, bucket: str, key: str) -> str | None:
    value = raw_s3.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption")
    return str(value) if value else None


def keys(raw_s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in raw_s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def buckets(fresh_bucket: FreshBucket) -> None:
    fresh_bucket(BUCKET)
    fresh_bucket(QUARANTINE)


@pytest.fixture
async def storage(local: Local, buckets: None) -> AsyncIterator[S3ObjectStorage]:
    settings = local.s3(BUCKET, sse="AES256", part_size_bytes=5 * MiB)
    async with S3ObjectStorage(settings) as opened:
        yield opened


@pytest.fixture
async def spools(local: Local, buckets: None, tmp_path: Path) -> AsyncIterator[Spools]:
    settings = local.settings(
        tmp_path / "spool",
        amqp=local.amqp("t_encryption"),
        database=local.database("sluice_test_encryption"),
        s3=local.s3(BUCKET, sse="AES256"),
    )
    settings.spool = SpoolSettings(
        dir=tmp_path / "spool", backend="s3", s3_bucket=QUARANTINE, s3_part_size_bytes=5 * MiB
    )
    assert isinstance(settings, Settings)
    async with open_spools(settings) as opened:
        yield opened


async def test_a_put_and_a_multipart_upload_are_stored_encrypted(
    storage: S3ObjectStorage, raw_s3: Any
) -> None:
    small = os.urandom(20_000)  # originals under the multipart threshold, and thumbnails
    await storage.put_bytes(
        "o/small", small, sha256_hex=hashlib.sha256(small).hexdigest(), content_type="image/webp"
    )
    big = os.urandom(11 * MiB + 3)  # three parts

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), MiB):
            yield big[start : start + MiB]

    await storage.put_multipart(
        "o/big", chunks(), sha256_hex=hashlib.sha256(big).hexdigest(), content_type="image/jpeg"
    )
    assert sse_of(raw_s3, BUCKET, "o/small") == "AES256"
    assert sse_of(raw_s3, BUCKET, "o/big") == "AES256"
    assert raw_s3.get_object(Bucket=BUCKET, Key="o/small")["Body"].read() == small
    assert raw_s3.get_object(Bucket=BUCKET, Key="o/big")["Body"].read() == big


async def test_the_quarantine_spool_and_its_promotion_are_encrypted(
    spools: Spools, raw_s3: Any
) -> None:
    data = os.urandom(6 * MiB)  # two parts of the quarantine's multipart upload
    name = str(uuid.uuid4())
    async with await spools.open_writer(name, len(data)) as writer:
        for start in range(0, len(data), 256 * 1024):
            await writer.write(data[start : start + 256 * 1024])
        await writer.commit()
    assert sse_of(raw_s3, QUARANTINE, name) == "AES256"

    assert spools.quarantine is not None
    await spools.quarantine.promote(
        f"quarantine://{name}",
        bucket=BUCKET,
        key=f"promoted/{name}",
        sha256_hex=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        content_type="image/jpeg",
    )
    assert sse_of(raw_s3, BUCKET, f"promoted/{name}") == "AES256"
    assert raw_s3.get_object(Bucket=BUCKET, Key=f"promoted/{name}")["Body"].read() == data


def test_seaweedfs_stores_a_copy_in_clear_unless_the_copy_asks(raw_s3: Any, buckets: None) -> None:
    raw_s3.put_object(Bucket=BUCKET, Key="src", Body=b"x" * 100, ServerSideEncryption="AES256")
    raw_s3.copy_object(Bucket=BUCKET, Key="copy", CopySource={"Bucket": BUCKET, "Key": "src"})
    assert sse_of(raw_s3, BUCKET, "src") == "AES256"
    assert sse_of(raw_s3, BUCKET, "copy") is None  # why every CopyObject carries the header


async def test_the_start_up_check_accepts_aes256_and_reports_kms_as_a_configuration_error(
    local: Local, buckets: None, raw_s3: Any
) -> None:
    async with S3ObjectStorage(local.s3(BUCKET, sse="AES256")) as storage:
        assert await verify_encryption(storage) == "AES256"
    async with S3ObjectStorage(local.s3(BUCKET)) as storage:
        assert await verify_encryption(storage) is None  # nothing asked, nothing written
    kms = local.s3(BUCKET, sse="aws:kms", sse_kms_key_id="sluice-test-key", timeout_s=10.0)
    async with S3ObjectStorage(kms) as storage:
        with pytest.raises(ConfigError, match=r"S3_SSE=aws:kms.*refused a PutObject"):
            await verify_encryption(storage)
    assert not [k for k in keys(raw_s3, BUCKET) if k.startswith(PROBE_PREFIX)]
