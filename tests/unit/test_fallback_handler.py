"""The fallback handler with fake ports: the reason it records from the failure history it is
given, and a file over the cap refused to the store dead-letter queue with its file.deferred."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.fallback.handler import Deps, failure_reason, handle
from shared.events import BaseEvent, FileDeferred, FileFallback, FileReceived, FileScanned
from shared.retry import FailureHistory
from shared.stage import Refusal

DATA = b"the bytes the store stage could not put in S3"
STORE_GAVE_UP = FailureHistory(
    stage="store",
    error_type="StorageUnavailable",
    error_message="S3 unavailable: connection refused",
    attempts=3,
)


@dataclass
class FakeSources:
    files: dict[str, bytes]

    async def read(self, source: str, *, expected_sha256: str, expected_size: int) -> bytes:
        return self.files[source]

    async def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        yield self.files[source]


@dataclass
class FakeFallbackStore:
    kept: list[tuple[BaseEvent, str, str]] = field(default_factory=list)

    async def keep(
        self,
        event: BaseEvent,
        data_base64: str,
        reason: str,
        trace_context: Mapping[str, str] | None = None,
    ) -> bool:
        self.kept.append((event, data_base64, reason))
        return True


def scanned(data: bytes = DATA) -> FileScanned:
    received = FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source="spool://abc",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/jpeg",
        original_name="photo.jpg",
    )
    return received.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27000")


def deps(max_bytes: int, repository: Any) -> Deps:
    return Deps(
        sources=FakeSources({"spool://abc": DATA}), repository=repository, max_bytes=max_bytes
    )


def test_the_reason_is_what_the_store_stage_gave_up_with() -> None:
    assert failure_reason(STORE_GAVE_UP) == (
        "StorageUnavailable after 3 attempts: S3 unavailable: connection refused"
    )
    assert failure_reason(FailureHistory()) == "StorageUnavailable: S3 unavailable"
    # A retry of the fallback's own failure no longer carries the store stage's.
    retried = FailureHistory(stage="fallback", error_type="DatabaseUnavailable", attempts=2)
    assert failure_reason(retried) == "S3 unavailable past the store stage's retries"


async def test_kept_with_the_reason_and_answered_with_file_fallback() -> None:
    event, repository = scanned(), FakeFallbackStore()

    [out] = await handle(event, STORE_GAVE_UP, deps(len(DATA), repository))

    assert isinstance(out, FileFallback) and out.causation_id == event.event_id
    assert out.reason == failure_reason(STORE_GAVE_UP)
    assert repository.kept == [(event, base64.b64encode(DATA).decode(), out.reason)]


async def test_over_the_cap_is_refused_to_the_store_dead_letter_queue_with_file_deferred() -> None:
    event, repository = scanned(), FakeFallbackStore()

    refusal = await handle(event, STORE_GAVE_UP, deps(len(DATA) - 1, repository))

    assert isinstance(refusal, Refusal)
    assert (refusal.route, refusal.reason) == ("store", "FallbackRefused")
    assert refusal.detail.endswith(f"(file_id={event.file_id})")
    [deferred] = refusal.events
    assert isinstance(deferred, FileDeferred) and deferred.causation_id == event.event_id
    assert f"{len(DATA)} bytes is over the fallback's {len(DATA) - 1}-byte cap" in deferred.reason
    assert deferred.reason.endswith(f"({failure_reason(STORE_GAVE_UP)})")
    assert repository.kept == []
