"""The S3 spool (``SLUICE_SPOOL_BACKEND=s3``) against the real SeaweedFS: writes into the
quarantine bucket as multipart uploads, promotion to the final bucket by server-side copy,
the store stage and ``sluice spool clean`` on ``quarantine://`` sources.

Also pins what the quarantine relies on from SeaweedFS (4.48): an object appears only when its
multipart upload completes; an aborted upload leaves nothing; the composite checksum of a
one-part upload is ``base64(SHA-256(part SHA-256))-1``, and ``CopyObject`` keeps it;
``CopySourceIfMatch`` is honoured.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.store.handler import Deps, already_stored, handle
from shared.adapters.quarantine import QuarantineSpool, one_part_checksum
from shared.adapters.sources import SpoolOrS3SourceReader
from shared.adapters.spools import Spools, open_spools
from shared.adapters.storage import S3ObjectStorage, b64_sha256
from shared.errors import ChecksumMismatch, InvalidSource, QuarantineUnavailable, SourceMissing
from shared.events import FileReceived, FileScanned, FileStored
from shared.ops.spoolclean import clean_quarantine
from shared.settings import Settings, SpoolSettings
from tests.e2e.pipeline import free_port
from tests.localenv import FreshBucket, Local

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
QUARANTINE = "sluice-test-quarantine"
FINAL = "sluice-test-promoted"
PHOTO = Path(__file__).resolve().parents[2] / "samples" / "photo-rotated.jpg"
PART = 5 * MiB  # the S3 minimum part size: files above it are written in several parts


def settings_for(local: Local, tmp: Path, *, backend: str = "s3", **s3: Any) -> Settings:
    settings = local.settings(
        tmp / "spool",
        amqp=local.amqp("t_quarantine"),
        database=local.database("sluice_test_quarantine"),
        s3=local.s3(FINAL, timeout_s=10.0, **s3),
    )
    settings.spool = SpoolSettings(
        dir=tmp / "spool",
        backend=backend,
        s3_bucket=QUARANTINE,
        s3_part_size_bytes=PART,
        s3_single_put_max_bytes=PART,
    )
    return settings


@pytest.fixture
async def spools(local: Local, fresh_bucket: FreshBucket, tmp_path: Path) -> AsyncIterator[Spools]:
    fresh_bucket(QUARANTINE)
    fresh_bucket(FINAL)
    async with open_spools(settings_for(local, tmp_path)) as opened:
        yield opened


@pytest.fixture
async def final(local: Local, spools: Spools) -> AsyncIterator[S3ObjectStorage]:
    async with S3ObjectStorage(local.s3(FINAL, timeout_s=10.0)) as storage:
        yield storage


async def spool_bytes(spools: Spools, name: str, data: bytes, chunk: int = 64 * 1024) -> str:
    """Write ``data`` as ``name`` through the configured spool, as the gateway does; its
    reference."""
    async with await spools.open_writer(name, len(data)) as writer:
        for start in range(0, len(data), chunk):
            await writer.write(data[start : start + chunk])
        await writer.commit()
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    assert writer.size_bytes == len(data)
    return spools.reference(name)


def keys(raw_s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in raw_s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def uploads(raw_s3: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in raw_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


# -- writing -----------------------------------------------------------------------------------


# 5 * PART + 7: six parts, more than SLUICE_SPOOL_S3_PARTS_IN_FLIGHT (2) sent at once
@pytest.mark.parametrize("size", [0, 1, 300_000, PART, PART + 1, 2 * PART + 12_345, 5 * PART + 7])
async def test_a_write_lands_whole_in_the_quarantine_bucket(
    spools: Spools, raw_s3: Any, size: int
) -> None:
    data = os.urandom(size)
    name = str(uuid.uuid4())
    source = await spool_bytes(spools, name, data)
    assert source == f"quarantine://{name}"
    stored = raw_s3.get_object(Bucket=QUARANTINE, Key=name)["Body"].read()
    assert stored == data
    assert await spools.size(source) == size
    assert await spools.read_bytes(source) == data
    assert b"".join([c async for c in spools.iter_chunks(source)]) == data
    assert uploads(raw_s3, QUARANTINE) == []


async def test_a_chunk_larger_than_a_part_is_cut_into_parts(spools: Spools, raw_s3: Any) -> None:
    data = os.urandom(3 * PART + 5)
    name = str(uuid.uuid4())
    source = await spool_bytes(spools, name, data, chunk=len(data))  # one write of it all
    assert await spools.read_bytes(source) == data
    head = raw_s3.head_object(Bucket=QUARANTINE, Key=name, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"].endswith("-4")  # three whole parts and the last 5 bytes
    assert uploads(raw_s3, QUARANTINE) == []


@pytest.mark.parametrize(
    ("size", "chunk", "checksum_suffix"),
    [
        (PART + 1, 64 * 1024, None),  # over a part, under the limit: one PutObject
        (8 * MiB, 64 * 1024, None),
        (8 * MiB + 1, 64 * 1024, "-2"),  # the limit's bytes first, then the rest
        (17 * MiB, 64 * 1024, "-3"),  # 8 MiB, then parts of 5 MiB: 8, 5, 4
        (19 * MiB, 19 * MiB, "-4"),  # one write of it all, cut: 8, 5, 5, 1
    ],
)
async def test_a_single_put_limit_above_the_part_size_keeps_files_under_it_whole(
    spools: Spools, raw_s3: Any, size: int, chunk: int, checksum_suffix: str | None
) -> None:
    """``SLUICE_SPOOL_S3_SINGLE_PUT_MAX_BYTES`` (8 MiB here) over parts of 5 MiB: a file up to
    the limit is one ``PutObject`` with its full SHA-256 as S3's checksum (what promotion
    trusts without reading back), a bigger one a multipart upload whose first part is the
    limit's bytes and the next ones the part size."""
    quarantine = QuarantineSpool(
        spools.quarantine.storage,
        part_size_bytes=PART,
        single_put_max_bytes=8 * MiB,
        parts_in_flight=2,
    )
    data = os.urandom(size)
    name = str(uuid.uuid4())
    async with await quarantine.open_writer(name, size) as writer:
        for start in range(0, size, chunk):
            await writer.write(data[start : start + chunk])
        await writer.commit()
    sha256_hex = hashlib.sha256(data).hexdigest()
    assert writer.sha256 == sha256_hex
    assert raw_s3.get_object(Bucket=QUARANTINE, Key=name)["Body"].read() == data
    head = raw_s3.head_object(Bucket=QUARANTINE, Key=name, ChecksumMode="ENABLED")
    if checksum_suffix is None:
        assert head["ChecksumSHA256"] == b64_sha256(sha256_hex)
    else:
        assert head["ChecksumSHA256"].endswith(checksum_suffix), head["ChecksumSHA256"]
    assert uploads(raw_s3, QUARANTINE) == []


async def test_nothing_is_visible_until_the_upload_completes(spools: Spools, raw_s3: Any) -> None:
    name = str(uuid.uuid4())
    writer = await spools.open_writer(name)
    await writer.write(os.urandom(PART))
    await writer.write(os.urandom(10))  # more bytes follow a whole part: that part is sent
    assert name not in keys(raw_s3, QUARANTINE)
    assert uploads(raw_s3, QUARANTINE) == [name]
    with pytest.raises(SourceMissing):
        await spools.read_bytes(spools.reference(name))
    await writer.commit()
    assert name in keys(raw_s3, QUARANTINE)


async def test_an_error_mid_write_aborts_the_multipart_upload(spools: Spools, raw_s3: Any) -> None:
    name = str(uuid.uuid4())
    with pytest.raises(RuntimeError, match="client went away"):
        async with await spools.open_writer(name) as writer:
            await writer.write(os.urandom(3 * PART + 10))  # three parts on their way
            raise RuntimeError("client went away")
    assert name not in keys(raw_s3, QUARANTINE)
    assert uploads(raw_s3, QUARANTINE) == []


async def test_bad_names_are_refused_before_anything_is_written(spools: Spools) -> None:
    for name in ("../escape", "a/b", "x.abandoned", "x.partial", ""):
        with pytest.raises(InvalidSource):
            await spools.open_writer(name)
    with pytest.raises(InvalidSource):
        await spools.read_bytes("quarantine://../../etc/passwd")


async def test_s3_down_is_quarantine_unavailable(local: Local, tmp_path: Path) -> None:
    settings = settings_for(local, tmp_path, endpoint=f"http://127.0.0.1:{free_port()}")
    async with open_spools(settings) as spools:
        started = time.monotonic()
        # one PutObject at commit; a multipart upload's first part (sent as more bytes follow)
        for chunks in ([100], [PART, 1]):
            with pytest.raises(QuarantineUnavailable):
                async with await spools.open_writer(str(uuid.uuid4())) as writer:
                    for size in chunks:
                        await writer.write(os.urandom(size))
                    await writer.commit()
        with pytest.raises(QuarantineUnavailable):
            await spools.read_bytes(f"quarantine://{uuid.uuid4()}")
        assert time.monotonic() - started < 10


# -- tombstones, deletion, both backends --------------------------------------------------------


async def test_abandon_leaves_a_tombstone_and_delete_removes_both(
    spools: Spools, raw_s3: Any
) -> None:
    name = str(uuid.uuid4())
    source = await spool_bytes(spools, name, b"refused upload")
    assert not await spools.is_abandoned(source)
    await spools.abandon(source)
    assert await spools.is_abandoned(source)
    assert keys(raw_s3, QUARANTINE) == [f"{name}.abandoned"]
    assert await spools.delete(source) is False  # the bytes were gone already
    assert keys(raw_s3, QUARANTINE) == []
    other = await spool_bytes(spools, str(uuid.uuid4()), b"x")
    assert await spools.delete(other) is True
    assert await spools.delete(other) is False


async def test_a_local_process_reads_quarantine_references_and_the_other_way_round(
    local: Local, spools: Spools, tmp_path: Path
) -> None:
    in_quarantine = await spool_bytes(spools, str(uuid.uuid4()), b"from the s3 spool")
    async with open_spools(settings_for(local, tmp_path, backend="local")) as local_spools:
        on_disk = await spool_bytes(local_spools, str(uuid.uuid4()), b"from the directory")
        assert on_disk.startswith("spool://")
        assert await local_spools.read_bytes(in_quarantine) == b"from the s3 spool"
    assert await spools.read_bytes(on_disk) == b"from the directory"
    with pytest.raises(InvalidSource):
        spools.of("s3://sluice/x")


# -- promotion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 300_000, 2 * PART + 7])
async def test_promotion_copies_server_side_and_checks_the_sha256(
    spools: Spools, final: S3ObjectStorage, raw_s3: Any, size: int
) -> None:
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    source = await spool_bytes(spools, str(uuid.uuid4()), data)
    key = f"alice/{uuid.uuid4()}-photo.jpg"
    promoted = await spools.promote(
        source, bucket=FINAL, key=key, sha256_hex=sha, size_bytes=size, content_type="image/jpeg"
    )
    assert promoted is True
    answer = raw_s3.get_object(Bucket=FINAL, Key=key)
    assert answer["Body"].read() == data
    assert answer["ContentType"] == "image/jpeg"
    assert answer["Metadata"] == {"sha256": sha}
    info = await final.head(key)
    assert already_stored(info, size_bytes=size, sha256_hex=sha)
    if size <= PART:  # one PutObject: S3's full-object checksum proves the copy
        assert info is not None and info.checksum_sha256 == b64_sha256(sha)


async def test_a_copy_that_is_not_the_events_bytes_is_removed(spools: Spools, raw_s3: Any) -> None:
    data = os.urandom(1000)
    source = await spool_bytes(spools, str(uuid.uuid4()), data)
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    for size, sha in ((1000, wrong), (999, hashlib.sha256(data).hexdigest())):
        with pytest.raises(ChecksumMismatch):
            await spools.promote(
                source, bucket=FINAL, key="k", sha256_hex=sha, size_bytes=size, content_type="x/y"
            )
        assert keys(raw_s3, FINAL) == []
    big = os.urandom(PART + 1)  # several parts: checked by reading the copy back
    source = await spool_bytes(spools, str(uuid.uuid4()), big)
    with pytest.raises(ChecksumMismatch):
        await spools.promote(
            source, bucket=FINAL, key="k", sha256_hex=wrong, size_bytes=len(big), content_type="x/y"
        )
    assert keys(raw_s3, FINAL) == []


async def test_promoting_a_file_that_is_gone_is_source_missing(spools: Spools) -> None:
    with pytest.raises(SourceMissing):
        await spools.promote(
            f"quarantine://{uuid.uuid4()}",
            bucket=FINAL,
            key="k",
            sha256_hex="0" * 64,
            size_bytes=1,
            content_type="x/y",
        )


async def test_seaweedfs_gives_a_one_part_upload_the_composite_checksum(
    spools: Spools, raw_s3: Any
) -> None:
    data = os.urandom(1000)
    part = base64.b64encode(hashlib.sha256(data).digest()).decode()
    upload = raw_s3.create_multipart_upload(
        Bucket=QUARANTINE, Key="one-part", ChecksumAlgorithm="SHA256"
    )
    answer = raw_s3.upload_part(
        Bucket=QUARANTINE,
        Key="one-part",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=data,
        ChecksumSHA256=part,
    )
    raw_s3.complete_multipart_upload(
        Bucket=QUARANTINE,
        Key="one-part",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"ETag": answer["ETag"], "PartNumber": 1, "ChecksumSHA256": part}]
        },
    )
    raw_s3.copy_object(
        Bucket=FINAL, Key="copy", CopySource={"Bucket": QUARANTINE, "Key": "one-part"}
    )
    for bucket, key in ((QUARANTINE, "one-part"), (FINAL, "copy")):
        head = raw_s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == one_part_checksum(hashlib.sha256(data).hexdigest())


async def test_seaweedfs_honours_copy_source_if_match(spools: Spools, raw_s3: Any) -> None:
    name = str(uuid.uuid4())
    await spool_bytes(spools, name, b"abc")
    with pytest.raises(Exception, match="PreconditionFailed"):
        raw_s3.copy_object(
            Bucket=FINAL,
            Key="k",
            CopySource={"Bucket": QUARANTINE, "Key": name},
            CopySourceIfMatch='"0123456789abcdef0123456789abcdef"',
        )


# -- the store stage ---------------------------------------------------------------------------


def scanned(source: str, data: bytes) -> FileScanned:
    received = FileReceived.new(
        file_id=uuid.UUID(source.rsplit("/", 1)[1]),
        owner="alice",
        source=source,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/jpeg",
        original_name="photo.jpg",
    )
    return received.follow(
        FileScanned, scanner="ClamAV", signature_version="1", content_type="image/jpeg"
    )


async def test_the_store_stage_promotes_a_quarantined_file(
    spools: Spools, final: S3ObjectStorage, raw_s3: Any
) -> None:
    data = PHOTO.read_bytes()
    source = await spool_bytes(spools, str(uuid.uuid4()), data)
    deps = Deps(
        sources=SpoolOrS3SourceReader(spools, final),
        storage=final,
        multipart_threshold_bytes=8 * MiB,
        spool=spools,
    )
    event = scanned(source, data)
    [stored] = await handle(event, deps)
    assert isinstance(stored, FileStored)
    assert raw_s3.get_object(Bucket=FINAL, Key=stored.key)["Body"].read() == data
    # A redelivery after the commit stage removed the quarantine copy: already stored.
    assert await spools.delete(source)
    [again] = await handle(event, deps)
    assert (again.event_id, again.key) == (stored.event_id, stored.key)


async def test_the_source_reader_checks_quarantined_bytes(
    spools: Spools, final: S3ObjectStorage
) -> None:
    data = b"some bytes"
    source = await spool_bytes(spools, str(uuid.uuid4()), data)
    reader = SpoolOrS3SourceReader(spools, final)
    sha = hashlib.sha256(data).hexdigest()
    assert await reader.read(source, expected_sha256=sha, expected_size=len(data)) == data
    with pytest.raises(ChecksumMismatch):
        await reader.read(source, expected_sha256="0" * 64, expected_size=len(data))
    with pytest.raises(SourceMissing):
        await reader.read(f"quarantine://{uuid.uuid4()}", expected_sha256=sha, expected_size=10)


# -- sluice spool clean ------------------------------------------------------------------------


class States:
    def __init__(self, statuses: dict[uuid.UUID, str]) -> None:
        self.statuses = statuses

    async def status(self, file_id: uuid.UUID, version_number: int) -> str | None:
        return self.statuses.get(file_id)


async def test_spool_clean_empties_the_quarantine_of_what_no_stage_needs(
    spools: Spools, raw_s3: Any
) -> None:
    done, flying, waiting, never = (uuid.uuid4() for _ in range(4))
    for file_id in (done, flying, waiting, never):
        await spool_bytes(spools, str(file_id), b"bytes")
    refused = spools.reference(str(uuid.uuid4()))
    await spool_bytes(spools, refused.removeprefix("quarantine://"), b"x")
    await spools.abandon(refused)
    unfinished = str(uuid.uuid4())
    # Never committed: an incomplete multipart upload (a part was sent).
    writer = await spools.open_writer(unfinished)
    await writer.write(os.urandom(PART))
    await writer.write(b"!")
    raw_s3.put_object(Bucket=QUARANTINE, Key="not-sluice.txt", Body=b"?")
    states = States({done: "available", flying: "scanned"})
    quarantine: QuarantineSpool = spools.quarantine

    young = await clean_quarantine(quarantine, states, older_than_s=3600)
    assert young.removed == []

    report = await clean_quarantine(
        quarantine, states, older_than_s=0, waiting={spools.reference(str(waiting))}
    )
    removed = {entry.name: entry.kind for entry in report.removed}
    assert removed == {
        str(done): "file",
        str(never): "file",
        refused.removeprefix("quarantine://") + ".abandoned": "abandoned",
        f"{unfinished}.partial": "partial",
    }
    assert sorted(keys(raw_s3, QUARANTINE)) == sorted([str(flying), str(waiting), "not-sluice.txt"])
    assert uploads(raw_s3, QUARANTINE) == []
    assert all(entry.age_s < 600 for entry in report.removed)
