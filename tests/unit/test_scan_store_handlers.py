"""The scan and store handlers with fake ports, and clamd's answers parsed as plain strings."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scan import handler as scan
from services.store import handler as store
from shared.adapters.scanner import (
    ScanVerdict,
    parse_instream_answer,
    parse_version_answer,
    unscannable_reason,
)
from shared.adapters.storage import ObjectInfo, b64_sha256
from shared.errors import ChecksumMismatch, ScannerUnavailable, SourceMissing
from shared.events import FileReceived, FileRejected, FileScanned, FileStored
from shared.policy import UploadPolicy
from shared.settings import GatewaySettings

MiB = 1024 * 1024
CLEAN = b"\xff\xd8\xff\xe0 a harmless jpeg-ish payload"
INFECTED = b"pretend-this-is-malware"
ENCRYPTED = b"%PDF-1.7 pretend-this-is-encrypted"


# -- fakes of the ports ------------------------------------------------------------------------


@dataclass
class FakeSources:
    """Sources in memory, checked like the real reader."""

    files: dict[str, bytes]

    async def read(self, source: str, *, expected_sha256: str, expected_size: int) -> bytes:
        if source not in self.files:
            raise SourceMissing("gone", source=source)
        data = self.files[source]
        if len(data) != expected_size or hashlib.sha256(data).hexdigest() != expected_sha256:
            raise ChecksumMismatch("mismatch", source=source)
        return data

    async def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        if source not in self.files:
            raise SourceMissing("gone", source=source)
        data = self.files[source]
        for start in range(0, len(data), MiB):
            yield data[start : start + MiB]


@dataclass
class FakeScanner:
    engine: tuple[str, str] = ("ClamAV 1.0.9", "27000/Tue Nov 19 09:32:00 2024")

    async def scan(self, data: bytes) -> ScanVerdict:
        if INFECTED in data:
            return ScanVerdict(clean=False, signature="Sluice-Test-Malware")
        if ENCRYPTED in data:
            return ScanVerdict(clean=False, signature="Heuristics.Encrypted.PDF")
        return ScanVerdict(clean=True)

    async def version(self) -> tuple[str, str]:
        return self.engine


@dataclass
class FakeStore:
    """A bucket in memory; records how each object was written."""

    bucket: str = "sluice-test"
    objects: dict[str, bytes] = field(default_factory=dict)
    written: list[tuple[str, str]] = field(default_factory=list)
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo | None:
        self.asked.append((key, "head"))
        if key not in self.objects:
            return None
        data = self.objects[key]
        digest = hashlib.sha256(data).hexdigest()
        return ObjectInfo(key, len(data), None, checksum_sha256=b64_sha256(digest))

    async def put_bytes(self, key: str, data: bytes, *, sha256_hex: str, content_type: str) -> None:
        if hashlib.sha256(data).hexdigest() != sha256_hex:
            raise ChecksumMismatch("BadDigest", key=key)
        self.objects[key] = data
        self.written.append((key, "put"))

    async def put_new(self, key: str, data: bytes, *, sha256_hex: str, content_type: str) -> bool:
        self.asked.append((key, "put if absent"))
        if key in self.objects:  # S3: 412 PreconditionFailed, nothing written
            return False
        await self.put_bytes(key, data, sha256_hex=sha256_hex, content_type=content_type)
        return True

    async def put_multipart(
        self, key: str, chunks: AsyncIterator[bytes], *, sha256_hex: str, content_type: str
    ) -> None:
        data = b"".join([chunk async for chunk in chunks])
        if hashlib.sha256(data).hexdigest() != sha256_hex:
            raise ChecksumMismatch("aborted", key=key)
        self.objects[key] = data
        self.written.append((key, "multipart"))


def received(data: bytes, source: str = "spool://f1", **overrides: object) -> FileReceived:
    fields: dict[str, object] = {
        "file_id": uuid.UUID("0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a01"),
        "owner": "alice",
        "received_at": datetime(2025, 3, 1, 12, 30, 5, tzinfo=UTC),
        "source": source,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": "image/jpeg",
        "original_name": "Holiday photo.jpg",
    }
    fields.update(overrides)
    return FileReceived.new(**fields)


@dataclass
class FakeStates:
    """Recorded statuses by file id."""

    statuses: dict[uuid.UUID, str] = field(default_factory=dict)

    async def status(self, file_id: uuid.UUID, version_number: int) -> str | None:
        return self.statuses.get(file_id)


@dataclass
class FakeSpool:
    abandoned: set[str] = field(default_factory=set)

    @staticmethod
    def owns(source: str) -> bool:
        return source.startswith(("spool://", "quarantine://"))

    async def is_abandoned(self, source: str) -> bool:
        return source in self.abandoned


def scan_deps(
    files: dict[str, bytes], states: FakeStates | None = None, spool: FakeSpool | None = None
) -> scan.Deps:
    return scan.Deps(
        sources=FakeSources(files),
        scanner=FakeScanner(),
        states=states or FakeStates(),
        spool=spool or FakeSpool(),
        policy=UploadPolicy.from_settings(GatewaySettings()),
    )


# -- scan --------------------------------------------------------------------------------------


async def test_clean_file_is_scanned_with_engine_and_database_versions() -> None:
    files = {"spool://f1": CLEAN}
    event = received(CLEAN)
    [out] = await scan.handle(event, scan_deps(files))
    assert isinstance(out, FileScanned)
    assert (out.scanner, out.signature_version) == FakeScanner().engine
    assert out.causation_id == event.event_id and out.sha256 == event.sha256
    assert files == {"spool://f1": CLEAN}


async def test_infected_spooled_file_is_rejected_and_left_for_commit_to_remove() -> None:
    data = b"prefix " + INFECTED
    files = {"spool://f1": data, "spool://other": CLEAN}
    [out] = await scan.handle(received(data), scan_deps(files))
    assert isinstance(out, FileRejected)
    assert out.reason == "infected"
    assert out.signature == "Sluice-Test-Malware"
    assert out.detail == "infected: Sluice-Test-Malware"
    # Removed by the commit stage once the rejection is recorded, never before it is published.
    assert files == {"spool://f1": data, "spool://other": CLEAN}


async def test_a_file_clamd_could_not_scan_whole_is_rejected_as_unscannable() -> None:
    files = {"spool://f1": ENCRYPTED}
    [out] = await scan.handle(received(ENCRYPTED), scan_deps(files))
    assert isinstance(out, FileRejected)
    assert out.reason == "unscannable"
    assert out.signature == "Heuristics.Encrypted.PDF"
    assert out.detail == "encrypted PDF (Heuristics.Encrypted.PDF)"
    assert files == {"spool://f1": ENCRYPTED}  # removed by the commit stage, as for infected


@pytest.mark.parametrize(
    "status",
    ["scanned", "fallback", "deferred", "stored", "available", "rejected", "corrupted"],
)
async def test_late_redelivery_after_cleanup_is_acknowledged_with_nothing_to_do(
    status: str,
) -> None:
    event = received(CLEAN)
    states = FakeStates({event.file_id: status})
    assert await scan.handle(event, scan_deps({}, states)) == []


async def test_event_of_an_upload_the_gateway_abandoned_is_rejected_as_abandoned() -> None:
    event = received(CLEAN)
    [out] = await scan.handle(event, scan_deps({}, spool=FakeSpool({event.source})))
    assert isinstance(out, FileRejected)
    assert out.reason == "abandoned" and "503" in out.detail


@pytest.mark.parametrize("status", [None, "received"])
async def test_missing_source_of_a_file_not_past_scanning_is_dead_lettered(
    status: str | None,
) -> None:
    event = received(CLEAN)
    states = FakeStates({event.file_id: status} if status else {})
    with pytest.raises(SourceMissing):
        await scan.handle(event, scan_deps({}, states))


async def test_infected_s3_source_is_rejected_but_left_to_its_owner() -> None:
    source = "s3://upstream/in/x.bin"
    files = {source: INFECTED}
    [out] = await scan.handle(received(INFECTED, source=source), scan_deps(files))
    assert isinstance(out, FileRejected)
    assert files == {source: INFECTED}


async def test_scan_refuses_bytes_that_are_not_what_the_event_announced() -> None:
    files = {"spool://f1": CLEAN + b"tampered"}
    with pytest.raises(ChecksumMismatch):
        await scan.handle(received(CLEAN), scan_deps(files))
    assert "spool://f1" in files


async def test_scan_of_a_redelivered_event_gives_the_same_event_id() -> None:
    files = {"spool://f1": CLEAN}
    event = received(CLEAN)
    [first] = await scan.handle(event, scan_deps(files))
    [second] = await scan.handle(event, scan_deps(files))
    assert first.event_id == second.event_id


# -- scan: the upload policy, for files that never went through the gateway --------------------

HTML = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"


async def test_html_named_jpg_is_rejected_by_the_policy_with_what_was_sniffed() -> None:
    files = {"s3://upstream/in/cat.jpg": HTML}
    event = received(HTML, source="s3://upstream/in/cat.jpg", original_name="cat.jpg")
    [out] = await scan.handle(event, scan_deps(files))
    assert isinstance(out, FileRejected)
    assert out.reason == "policy"
    assert out.detail == (
        "policy: content sniffed as text/html, which is not an accepted type (the name claims .jpg)"
    )
    assert out.content_type == "text/html"  # the record says what the bytes are


async def test_a_lying_content_type_is_replaced_by_the_sniffed_one() -> None:
    event = received(CLEAN, content_type="text/html")
    [out] = await scan.handle(event, scan_deps({"spool://f1": CLEAN}))
    assert isinstance(out, FileScanned)
    assert out.content_type == "image/jpeg"


async def test_an_extension_outside_the_policy_is_rejected() -> None:
    event = received(CLEAN, original_name="page.html", content_type="image/jpeg")
    [out] = await scan.handle(event, scan_deps({"spool://f1": CLEAN}))
    assert isinstance(out, FileRejected) and out.reason == "policy"
    assert ".html is not accepted" in out.detail


async def test_a_file_over_its_types_limit_is_rejected_without_reading_it() -> None:
    big = received(CLEAN, size_bytes=5 * MiB + 1, original_name="report.pdf")
    # No source at all: reading it would raise SourceMissing.
    [out] = await scan.handle(big, scan_deps({}))
    assert isinstance(out, FileRejected) and out.reason == "policy"
    assert out.detail == (
        f"policy: the file is {5 * MiB + 1} bytes, over the limit of {5 * MiB} bytes for .pdf"
    )


async def test_metadata_over_the_cap_is_rejected() -> None:
    event = received(CLEAN, metadata={"notes": "x" * (16 * 1024)})
    [out] = await scan.handle(event, scan_deps({"spool://f1": CLEAN}))
    assert isinstance(out, FileRejected) and out.reason == "policy"
    assert "the metadata is" in out.detail and "over the limit of 16384 bytes" in out.detail


async def test_the_name_is_cleaned_as_the_gateway_cleans_it() -> None:
    event = received(CLEAN, original_name="cat\x1b[31m.jpg")
    [out] = await scan.handle(event, scan_deps({"spool://f1": CLEAN}))
    assert isinstance(out, FileScanned)
    assert out.original_name == "cat[31m.jpg"


async def test_malware_is_reported_as_infected_whatever_its_type() -> None:
    files = {"spool://f1": INFECTED}  # text/plain: outside the policy too
    [out] = await scan.handle(received(INFECTED), scan_deps(files))
    assert isinstance(out, FileRejected) and out.reason == "infected"


# -- store -------------------------------------------------------------------------------------


def scanned(data: bytes, **overrides: Any) -> FileScanned:
    return received(data, **overrides).follow(
        FileScanned, scanner="ClamAV 1.0.9", signature_version="27000"
    )


def store_deps(files: dict[str, bytes], bucket: FakeStore, threshold: int = 8 * MiB) -> store.Deps:
    return store.Deps(
        sources=FakeSources(files), storage=bucket, multipart_threshold_bytes=threshold
    )


async def test_store_puts_small_file_under_deterministic_key() -> None:
    bucket = FakeStore()
    event = scanned(CLEAN)
    [out] = await store.handle(event, store_deps({"spool://f1": CLEAN}, bucket))
    assert isinstance(out, FileStored)
    key = "alice/0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a01-20250301T123005Z-Holiday_photo.jpg"
    assert (out.bucket, out.key) == ("sluice-test", key)
    assert bucket.objects == {key: CLEAN}
    assert bucket.written == [(key, "put")]
    assert bucket.asked == [(key, "put if absent")]  # one request: no HEAD before it


async def test_store_redelivery_with_the_spool_file_still_there_writes_nothing() -> None:
    bucket = FakeStore()
    files = {"spool://f1": CLEAN}
    event = scanned(CLEAN)
    [first] = await store.handle(event, store_deps(files, bucket))
    [second] = await store.handle(event, store_deps(files, bucket))
    assert isinstance(second, FileStored) and second.event_id == first.event_id
    assert bucket.written == [(first.key, "put")]
    assert bucket.asked[1:] == [(first.key, "put if absent"), (first.key, "head")]


async def test_store_redelivery_emits_same_event_and_skips_the_upload() -> None:
    bucket = FakeStore()
    files = {"spool://f1": CLEAN}
    event = scanned(CLEAN)
    [first] = await store.handle(event, store_deps(files, bucket))
    files.clear()  # the commit stage cleaned the spool meanwhile
    [second] = await store.handle(event, store_deps(files, bucket))
    assert second.event_id == first.event_id
    assert second.model_dump(exclude={"occurred_at"}) == first.model_dump(exclude={"occurred_at"})
    assert len(bucket.written) == 1


async def test_store_redelivery_answers_from_the_object_when_the_source_changed() -> None:
    bucket = FakeStore()
    files = {"spool://f1": CLEAN}
    event = scanned(CLEAN)
    [first] = await store.handle(event, store_deps(files, bucket))
    files["spool://f1"] = b"bytes that are not the event's"  # the source is no longer the file
    [second] = await store.handle(event, store_deps(files, bucket))
    assert second.event_id == first.event_id
    assert bucket.written == [(first.key, "put")]
    bucket.objects.clear()  # not stored, and the source is wrong: that is the message's error
    with pytest.raises(ChecksumMismatch):
        await store.handle(event, store_deps(files, bucket))


async def test_store_replaces_an_object_that_is_not_the_file() -> None:
    bucket = FakeStore()
    event = scanned(CLEAN)
    [out] = await store.handle(event, store_deps({"spool://f1": CLEAN}, bucket))
    assert isinstance(out, FileStored)
    bucket.objects[out.key] = b"half an earlier upload"
    await store.handle(event, store_deps({"spool://f1": CLEAN}, bucket))
    assert bucket.objects[out.key] == CLEAN


async def test_store_streams_files_at_the_threshold_as_multipart() -> None:
    bucket = FakeStore()
    data = bytes(range(256)) * (5 * MiB // 256)
    event = scanned(data)
    [out] = await store.handle(event, store_deps({"spool://f1": data}, bucket, threshold=5 * MiB))
    assert isinstance(out, FileStored)
    assert bucket.written == [(out.key, "multipart")]
    assert bucket.objects[out.key] == data


async def test_store_wrong_sha256_writes_nothing() -> None:
    bucket = FakeStore()
    event = scanned(CLEAN, sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ChecksumMismatch):
        await store.handle(event, store_deps({"spool://f1": CLEAN}, bucket))
    assert bucket.objects == {}


@pytest.mark.parametrize(
    ("checksum", "metadata", "expected"),
    [
        (b64_sha256(hashlib.sha256(CLEAN).hexdigest()), {}, True),
        (b64_sha256(hashlib.sha256(b"x").hexdigest()), {}, False),
        ("U+kG3gb9nVvcb2hT2aOCDdEv9q44TbdvatdyxOAOW1A=-2", {}, False),
        ("U+kG3gb9nVvcb2hT2aOCDdEv9q44TbdvatdyxOAOW1A=-2", {"sha256": "0" * 64}, False),
        (
            "U+kG3gb9nVvcb2hT2aOCDdEv9q44TbdvatdyxOAOW1A=-2",
            {"sha256": hashlib.sha256(CLEAN).hexdigest()},
            True,
        ),
        (None, {"sha256": hashlib.sha256(CLEAN).hexdigest()}, False),
    ],
)
def test_already_stored_needs_size_and_sha256(
    checksum: str | None, metadata: dict[str, str], expected: bool
) -> None:
    info = ObjectInfo("k", len(CLEAN), None, checksum_sha256=checksum, metadata=metadata)
    sha = hashlib.sha256(CLEAN).hexdigest()
    assert store.already_stored(info, size_bytes=len(CLEAN), sha256_hex=sha) is expected
    assert store.already_stored(info, size_bytes=len(CLEAN) + 1, sha256_hex=sha) is False
    assert store.already_stored(None, size_bytes=len(CLEAN), sha256_hex=sha) is False


# -- clamd's answers ---------------------------------------------------------------------------


def test_only_an_exact_ok_is_clean() -> None:
    assert parse_instream_answer("stream: OK\n") == ScanVerdict(clean=True)


@pytest.mark.parametrize(
    ("answer", "signature"),
    [
        ("stream: Eicar-Test-Signature FOUND\n", "Eicar-Test-Signature"),
        ("stream: Eicar-Test-Signature.UNOFFICIAL FOUND\n", "Eicar-Test-Signature.UNOFFICIAL"),
        ("stream: Win.Test.A FOUND\nstream: Win.Test.B FOUND\n", "Win.Test.A"),
    ],
)
def test_found_is_infected_with_the_signature(answer: str, signature: str) -> None:
    assert parse_instream_answer(answer) == ScanVerdict(clean=False, signature=signature)


@pytest.mark.parametrize(
    ("answer", "signature", "why"),
    [
        ("stream: Heuristics.Encrypted.PDF FOUND\n", "Heuristics.Encrypted.PDF", "encrypted PDF"),
        (
            "stream: Heuristics.Encrypted.Zip FOUND\n",
            "Heuristics.Encrypted.Zip",
            "encrypted ZIP archive",
        ),
        (
            "stream: Heuristics.Encrypted.RAR FOUND\n",
            "Heuristics.Encrypted.RAR",
            "encrypted RAR archive",
        ),
        (
            "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\n",
            "Heuristics.Limits.Exceeded.MaxFileSize",
            "a file in it is bigger than clamd's MaxFileSize",
        ),
        (
            "stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND\n",
            "Heuristics.Limits.Exceeded.MaxScanSize",
            "its unpacked content is bigger than clamd's MaxScanSize",
        ),
        (
            "stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND\n",
            "Heuristics.Limits.Exceeded.MaxRecursion",
            "nested deeper than clamd's MaxRecursion",
        ),
        (
            "stream: Heuristics.Limits.Exceeded.MaxFiles FOUND\n",
            "Heuristics.Limits.Exceeded.MaxFiles",
            "holds more files than clamd's MaxFiles",
        ),
        (
            "stream: Heuristics.Limits.Exceeded.MaxScanTime FOUND\n",
            "Heuristics.Limits.Exceeded.MaxScanTime",
            "took clamd longer than its MaxScanTime",
        ),
        (  # a name this table does not know keeps clamd's words for it
            "stream: Heuristics.Limits.Exceeded.EmailHeaders FOUND\n",
            "Heuristics.Limits.Exceeded.EmailHeaders",
            "past clamd's EmailHeaders limit",
        ),
        ("stream: Heuristics.Encrypted.Foo FOUND\n", "Heuristics.Encrypted.Foo", "encrypted Foo"),
    ],
)
def test_clamd_alerts_for_what_it_could_not_scan_are_unscannable(
    answer: str, signature: str, why: str
) -> None:
    verdict = parse_instream_answer(answer)
    assert verdict == ScanVerdict(clean=False, signature=signature)
    assert verdict.unscannable == why


@pytest.mark.parametrize(
    "signature",
    [
        "Eicar-Test-Signature",
        "Win.Test.EICAR_HDB-1",
        "Heuristics.OLE2.ContainsMacros.VBA",  # a finding about the content, not a limit
        "Heuristics.Phishing.Email.SpoofedDomain",
        "Heuristics.Encrypted",  # no format after the prefix's dot
        "Heuristics.Limits.Exceeded",
        "Sluice.Heuristics.Encrypted.PDF",
    ],
)
def test_every_other_name_is_infected(signature: str) -> None:
    verdict = parse_instream_answer(f"stream: {signature} FOUND\n")
    assert (verdict.clean, verdict.signature, verdict.unscannable) == (False, signature, None)


def test_malware_found_beside_an_alert_is_what_the_verdict_names() -> None:
    answer = "stream: Heuristics.Encrypted.Zip FOUND\nstream: Win.Test.A FOUND\n"
    verdict = parse_instream_answer(answer)
    assert (verdict.signature, verdict.unscannable) == ("Win.Test.A", None)
    alerts = "stream: Heuristics.Encrypted.Zip FOUND\nstream: Heuristics.Encrypted.PDF FOUND\n"
    assert parse_instream_answer(alerts).signature == "Heuristics.Encrypted.Zip"


@given(st.text(min_size=1, max_size=60))
def test_only_the_two_alert_families_are_unscannable(name: str) -> None:
    unscannable = name.startswith(("Heuristics.Encrypted.", "Heuristics.Limits.Exceeded."))
    assert (unscannable_reason(name) is not None) is unscannable
    assert ScanVerdict(clean=True, signature=None).unscannable is None


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "\n",
        "stream: OK",  # cut short: clamd ends the line with a newline
        "stream: OK\nextra\n",
        "stream: OK\nstream: OK\n",
        "stream: OK\r\n",
        " stream: OK\n",
        "INSTREAM size limit exceeded. ERROR\n",
        "stream: Can't allocate memory ERROR\n",
        "stream: Eicar-Test-Signature FOUND",  # cut short
        "stream: Eicar FOUND\nstream: OK\n",
        "stream:  FOUND\n",
        "PONG\n",
        "\x00\xff garbage",
    ],
)
def test_anything_else_is_no_verdict_and_quotes_the_answer(answer: str) -> None:
    with pytest.raises(ScannerUnavailable) as caught:
        parse_instream_answer(answer)
    assert repr(answer[:50])[1:-1] in str(caught.value)


@given(st.text(max_size=80))
def test_no_answer_but_the_exact_ok_is_ever_clean(answer: str) -> None:
    try:
        verdict = parse_instream_answer(answer)
    except ScannerUnavailable:
        return
    assert verdict.clean is (answer == "stream: OK\n")
    if not verdict.clean:
        assert verdict.signature and answer.endswith(" FOUND\n")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "ClamAV 1.0.9/27000/Tue Nov 19 09:32:00 2024\n",
            ("ClamAV 1.0.9", "27000/Tue Nov 19 09:32:00 2024"),
        ),
        ("ClamAV 1.4.6\n", ("ClamAV 1.4.6", "unknown")),
        ("ClamAV 1.4.6/\n", ("ClamAV 1.4.6", "unknown")),
    ],
)
def test_version_answer(answer: str, expected: tuple[str, str]) -> None:
    assert parse_version_answer(answer) == expected


@pytest.mark.parametrize("answer", ["", "ClamAV 1.4.6", "PONG\n", "INSTREAM ERROR\n"])
def test_version_answer_not_understood(answer: str) -> None:
    with pytest.raises(ScannerUnavailable):
        parse_version_answer(answer)
