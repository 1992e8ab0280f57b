"""The spool's pure logic: the backend setting, references and names, which S3 checksums prove
a promoted copy, and the store stage's choice between promoting and uploading (with fakes of
the ports; the real quarantine bucket is tested in tests/integration/test_quarantine.py)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.store import handler as store
from shared.adapters.durable import fsync_directory
from shared.adapters.quarantine import QuarantineSpool, checksum_proves, one_part_checksum
from shared.adapters.spool import LocalSpool, valid_name
from shared.adapters.storage import b64_sha256
from shared.claims import own_spool_entry
from shared.errors import ConfigError, InvalidSource, QuarantineUnavailable, StorageUnavailable
from shared.settings import Settings, SpoolSettings, load
from tests.unit.test_scan_store_handlers import CLEAN, FakeSources, FakeStore, received, scanned

MiB = 1024 * 1024


def test_the_backend_is_local_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(SpoolSettings)
    assert (settings.backend, settings.s3_bucket) == ("local", "sluice-quarantine")
    monkeypatch.setenv("SLUICE_SPOOL_BACKEND", "s3")
    monkeypatch.setenv("SLUICE_SPOOL_S3_BUCKET", "photos-quarantine")
    settings = load(SpoolSettings)
    assert (settings.backend, settings.s3_bucket) == ("s3", "photos-quarantine")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SLUICE_SPOOL_BACKEND", "nfs"),
        ("SLUICE_SPOOL_S3_BUCKET", "Bad_Bucket"),
        ("SLUICE_SPOOL_S3_PART_SIZE_BYTES", str(4 * MiB)),
    ],
)
def test_a_bad_spool_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load(SpoolSettings)


@pytest.mark.parametrize(
    "s3", [{"S3_BUCKET_NAME": "photos"}, {"S3_UPSTREAM_BUCKETS": '["upstream", "photos"]'}]
)
def test_the_quarantine_bucket_is_neither_the_final_nor_an_upstream_one(
    monkeypatch: pytest.MonkeyPatch, s3: dict[str, str]
) -> None:
    monkeypatch.setenv("SLUICE_SPOOL_S3_BUCKET", "photos")
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="SLUICE_SPOOL_S3_BUCKET"):
        Settings.from_env()


def test_references_name_their_backend() -> None:
    assert LocalSpool.reference("f1") == "spool://f1"
    assert QuarantineSpool.reference("f1") == "quarantine://f1"
    assert QuarantineSpool.key("quarantine://f1") == "f1"
    assert QuarantineSpool.owns("quarantine://f1") and not QuarantineSpool.owns("spool://f1")
    assert LocalSpool.owns("spool://f1") and not LocalSpool.owns("quarantine://f1")
    for bad in ("spool://f1", "quarantine://../x", "quarantine://a/b", "quarantine://x.partial"):
        with pytest.raises(InvalidSource):
            QuarantineSpool.key(bad)


@given(st.text(max_size=210))
def test_a_valid_name_never_leaves_its_spool(name: str) -> None:
    if valid_name(name):
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert not name.endswith((".partial", ".abandoned"))


def test_the_commit_stage_removes_only_the_files_own_entry() -> None:
    event = received(CLEAN)
    for source, own in (
        (f"spool://{event.file_id}", True),
        (f"quarantine://{event.file_id}", True),
        ("quarantine://another-file", False),
        (f"s3://sluice/{event.file_id}", False),
    ):
        assert own_spool_entry(event.model_copy(update={"source": source})) is own


def test_only_one_part_checksums_prove_the_bytes() -> None:
    data = b"the event's bytes"
    sha = hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256(data).digest()
    expected = base64.b64encode(hashlib.sha256(digest).digest()).decode() + "-1"
    assert one_part_checksum(sha) == expected
    assert checksum_proves(expected, sha)
    assert checksum_proves(b64_sha256(sha), sha)  # a full-object checksum (a single PUT)
    two_parts = base64.b64encode(hashlib.sha256(digest + digest).digest()).decode() + "-2"
    assert not checksum_proves(two_parts, sha)
    assert not checksum_proves(None, sha)
    assert not checksum_proves(one_part_checksum(hashlib.sha256(b"other").hexdigest()), sha)


# -- the store stage's choice -------------------------------------------------------------------


@dataclass
class FakeQuarantine:
    """A spool that promotes ``quarantine://`` sources into ``into`` (or fails like S3 down)."""

    into: FakeStore
    files: dict[str, bytes]
    down: bool = False
    promoted: list[str] = field(default_factory=list)

    @staticmethod
    def owns(source: str) -> bool:
        return source.startswith(("spool://", "quarantine://"))

    async def promote(
        self,
        source: str,
        *,
        bucket: str,
        key: str,
        sha256_hex: str,
        size_bytes: int,
        content_type: str,
    ) -> bool:
        if not source.startswith("quarantine://"):
            return False
        if self.down:
            raise QuarantineUnavailable("S3 unreachable", source=source)
        self.into.objects[key] = self.files[source]
        self.promoted.append(source)
        return True


class DownStore(FakeStore):
    """S3 down: every request fails."""

    async def head(self, key: str, *, bucket: str | None = None) -> None:
        raise StorageUnavailable("S3 unreachable", key=key)

    async def put_new(self, key: str, data: bytes, *, sha256_hex: str, content_type: str) -> bool:
        raise StorageUnavailable("S3 unreachable", key=key)


def deps(files: dict[str, bytes], bucket: FakeStore, spool: FakeQuarantine) -> store.Deps:
    return store.Deps(
        sources=FakeSources(files),
        storage=bucket,
        multipart_threshold_bytes=8 * MiB,
        spool=spool,  # type: ignore[arg-type]
    )


async def test_a_quarantined_file_is_promoted_not_uploaded() -> None:
    bucket = FakeStore()
    files = {"quarantine://f1": CLEAN}
    spool = FakeQuarantine(bucket, files)
    [out] = await store.handle(scanned(CLEAN, source="quarantine://f1"), deps(files, bucket, spool))
    assert spool.promoted == ["quarantine://f1"]
    assert bucket.written == []  # no PUT: a server-side copy
    assert bucket.objects[out.key] == CLEAN  # type: ignore[attr-defined]


async def test_a_locally_spooled_file_is_uploaded() -> None:
    bucket = FakeStore()
    files = {"spool://f1": CLEAN}
    spool = FakeQuarantine(bucket, files)
    await store.handle(scanned(CLEAN), deps(files, bucket, spool))
    assert spool.promoted == []
    assert [how for _, how in bucket.written] == ["put"]


async def test_s3_down_is_a_quarantine_outage_for_quarantined_files_only() -> None:
    files = {"quarantine://f1": CLEAN, "spool://f1": CLEAN}
    for source, error in (
        ("quarantine://f1", QuarantineUnavailable),
        ("spool://f1", StorageUnavailable),
    ):
        bucket = DownStore()
        with pytest.raises(StorageUnavailable) as raised:
            await store.handle(
                scanned(CLEAN, source=source), deps(files, bucket, FakeQuarantine(bucket, files))
            )
        assert type(raised.value) is error
    bucket = FakeStore()
    spool = FakeQuarantine(bucket, files, down=True)
    with pytest.raises(QuarantineUnavailable):
        await store.handle(scanned(CLEAN, source="quarantine://f1"), deps(files, bucket, spool))


async def test_a_local_spool_reads_its_own_references_only(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path)
    assert not await spool.promote(
        "spool://f1", bucket="b", key="k", sha256_hex="0" * 64, size_bytes=1, content_type="x/y"
    )
    with pytest.raises(InvalidSource):
        await spool.size("quarantine://f1")


async def test_a_local_spool_write_makes_its_new_name_durable_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync of the file makes its bytes durable, not the name the rename gives it: the writer
    also fsyncs the spool directory, after the rename, before commit returns (POSIX fsync)."""
    synced: list[tuple[Path, list[str]]] = []

    def recording(directory: Path) -> None:
        synced.append((directory, sorted(p.name for p in directory.iterdir())))
        fsync_directory(directory)

    monkeypatch.setattr("shared.adapters.spool.fsync_directory", recording)
    spool = LocalSpool(tmp_path)
    async with await spool.open_writer("f1") as writer:
        await writer.write(b"some bytes")
        assert synced == []
        await writer.commit()
    assert synced == [(tmp_path, ["f1"])]  # after the rename: the final name, no .partial
    assert (tmp_path / "f1").read_bytes() == b"some bytes"
