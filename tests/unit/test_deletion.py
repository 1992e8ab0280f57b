"""Deletion's pure decisions: the status, the late-event answer, what the history keeps, the
purge handler (with fakes of its ports; the real ones: tests/e2e/test_deletion.py)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.commit.deletion import dropped, history_payload
from services.commit.handler import advance_status
from services.purge.handler import Deps, handle, object_prefix
from shared.errors import InvalidEvent
from shared.events import (
    FileDeadLettered,
    FileDeleted,
    FileReceived,
    FileStored,
    parse_event,
)
from shared.ports import ObjectInfo
from shared.status import RANK, FileStatus


def _received(owner: str = "alice") -> FileReceived:
    return FileReceived.new(
        file_id=uuid.uuid4(),
        owner=owner,
        source="spool://x",
        size_bytes=3,
        sha256=hashlib.sha256(b"abc").hexdigest(),
        content_type="image/jpeg",
        original_name="secret-name.jpg",
        metadata={"subject": "private"},
    )


def _deleted(event: FileReceived) -> FileDeleted:
    fields = event.model_dump(
        include={
            "file_id",
            "version_number",
            "owner",
            "received_at",
            "source",
            "size_bytes",
            "sha256",
            "content_type",
            "original_name",
            "kind",
            "metadata",
        }
    )
    return FileDeleted.of_file(fields, reason="owner")


@pytest.mark.parametrize("status", sorted(RANK))
def test_deleted_wins_over_every_status_and_never_moves(status: FileStatus) -> None:
    assert advance_status(status, FileStatus.DELETED) == FileStatus.DELETED
    assert advance_status(FileStatus.DELETED, status) == FileStatus.DELETED


def test_a_deletion_has_one_id_per_file_and_round_trips() -> None:
    received = _received()
    first, again = _deleted(received), _deleted(received)
    assert first.event_id == again.event_id
    assert parse_event(first.model_dump_json().encode()) == first


def test_the_history_keeps_no_name_and_no_metadata() -> None:
    payload = history_payload(_deleted(_received()))
    assert set(payload) == {"type", "event_id", "file_id", "occurred_at", "reason"}
    assert "secret" not in str(payload) and "private" not in str(payload)


def test_a_late_stage_event_asks_for_another_purge_and_a_notice_does_not() -> None:
    received = _received()
    stored = received.follow(FileStored, bucket="b", key=f"alice/{received.file_id}-x")
    (purge,) = dropped(stored)
    assert isinstance(purge, FileDeleted)
    assert purge.reason == "late_event" and purge.file_id == received.file_id
    assert dropped(stored)[0].event_id == purge.event_id  # the same answer when redelivered
    notice = FileDeadLettered.about(
        received,
        stage="scan",
        error_type="SourceMissing",
        error_message="gone",
        attempts=1,
        failed_at=datetime.now(UTC),
    )
    assert dropped(notice) == []


class FakeStore:
    def __init__(self, keys: list[str]) -> None:
        self.keys = set(keys)

    async def list_objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for key in sorted(self.keys):
            if key.startswith(prefix):
                yield ObjectInfo(key=key, size_bytes=1, last_modified=None)

    async def delete(self, key: str) -> None:
        self.keys.discard(key)


class FakeRows:
    def __init__(self) -> None:
        self.deleted: list[tuple[uuid.UUID, str]] = []

    async def delete_file(self, file_id: uuid.UUID, owner: str) -> int:
        self.deleted.append((file_id, owner))
        return 1


class FakeSpool:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def reference(self, name: str) -> str:
        return f"spool://{name}"

    def owns(self, source: str) -> bool:
        return source.startswith(("spool://", "quarantine://"))

    async def delete(self, source: str) -> bool:
        self.removed.append(source)
        return True


async def test_the_purge_removes_the_file_s_keys_only() -> None:
    received = _received()
    other = uuid.uuid4()
    mine = object_prefix("alice", received.file_id)
    store = FakeStore(
        [
            f"{mine}20260101T000000Z-a.jpg",
            f"{mine}20260101T000000Z-a.jpg.thumb-256.webp",
            f"{mine}20260202T000000Z-b.jpg",  # another version
            f"_quarantine/{mine}20260303T000000Z-c.jpg",  # a version a rescan quarantined
            f"alice/{other}-20260101T000000Z-a.jpg",
            f"_quarantine/alice/{other}-20260101T000000Z-a.jpg",
            f"bob/{received.file_id}-20260101T000000Z-a.jpg",
        ]
    )
    rows, spool = FakeRows(), FakeSpool()
    deps: Any = Deps(storage=store, fallback=rows, spool=spool)  # type: ignore[arg-type]
    assert await handle(_deleted(received), deps) == []
    assert store.keys == {
        f"alice/{other}-20260101T000000Z-a.jpg",
        f"_quarantine/alice/{other}-20260101T000000Z-a.jpg",
        f"bob/{received.file_id}-20260101T000000Z-a.jpg",
    }
    assert rows.deleted == [(received.file_id, "alice")]
    assert spool.removed == [f"spool://{received.file_id}"]
    with pytest.raises(InvalidEvent):
        await handle(received, deps)
