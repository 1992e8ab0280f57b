"""Versions: which version is the file's current one (the commit stage's ``transition``), and
each version's object key (docs/files-api.md § Versions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.commit.handler import transition
from shared.claims import own_spool_entry
from shared.events import FileReceived
from shared.naming import object_key, parse_spool_name, spool_name
from shared.ports import FileLock
from shared.status import FileStatus


def _lock(current: int, file_status: str, version_status: str | None) -> FileLock:
    return FileLock(
        current_version=current,
        version_status=version_status,
        owner="alice",
        file_status=file_status,
    )


def test_a_new_version_in_flight_leaves_an_available_file_as_it_was() -> None:
    for incoming in (FileStatus.RECEIVED, FileStatus.SCANNED, FileStatus.STORED):
        change = transition(_lock(1, "available", None), 2, incoming, "x")
        assert change.version_status == incoming
        assert change.file_status is None


def test_a_rejected_new_version_leaves_the_previous_one_current() -> None:
    change = transition(_lock(1, "available", "scanned"), 2, FileStatus.REJECTED, "infected")
    assert change.version_status == FileStatus.REJECTED
    assert change.file_status is None


def test_a_new_version_becomes_current_once_available() -> None:
    change = transition(_lock(1, "available", "stored"), 2, FileStatus.AVAILABLE, "ok")
    assert change.file_status == FileStatus.AVAILABLE


def test_a_file_without_an_available_version_follows_its_newest() -> None:
    change = transition(_lock(1, "rejected", None), 2, FileStatus.RECEIVED, "x")
    assert change.file_status == FileStatus.RECEIVED


def test_an_older_version_becoming_available_is_current_while_the_newer_is_not() -> None:
    change = transition(_lock(2, "received", "stored"), 1, FileStatus.AVAILABLE, "ok")
    assert change.file_status == FileStatus.AVAILABLE
    change = transition(_lock(2, "available", "stored"), 1, FileStatus.AVAILABLE, "ok")
    assert change.file_status is None


def test_the_current_version_losing_its_object_shows_on_the_file() -> None:
    change = transition(_lock(2, "available", "available"), 2, FileStatus.CORRUPTED, "lost")
    assert (change.file_status, change.status_reason) == (FileStatus.CORRUPTED, "lost")


def test_each_version_has_its_own_key_even_in_the_same_second() -> None:
    file_id = uuid.UUID(int=7)
    when = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)
    first = object_key("alice", file_id, when, "a.jpg")
    assert first == f"alice/{file_id}-20261203T100000Z-a.jpg"  # version 1 as before
    keys = {object_key("alice", file_id, when, "a.jpg", n) for n in (1, 2, 3)}
    assert len(keys) == 3
    assert (
        object_key("alice", file_id, when, "a.jpg", 2)
        == f"alice/{file_id}-v2-20261203T100000Z-a.jpg"
    )


def test_each_version_has_its_own_spool_entry() -> None:
    file_id = uuid.UUID(int=9)
    assert spool_name(file_id) == str(file_id)
    assert spool_name(file_id, 3) == f"{file_id}.v3"
    for n in (1, 2, 17):
        assert parse_spool_name(spool_name(file_id, n)) == (file_id, n)
    for other in (f"{file_id}.v1", f"{file_id}.v0", f"{file_id}.v02", f"{file_id}.vx", "x.v2"):
        assert parse_spool_name(other) is None, other


def test_the_commit_stage_removes_only_its_own_versions_spool_entry() -> None:
    file_id = uuid.UUID(int=11)

    def event(version: int, source: str) -> FileReceived:
        return FileReceived.new(
            file_id=file_id,
            version_number=version,
            owner="alice",
            source=source,
            size_bytes=1,
            sha256="0" * 64,
            content_type="image/png",
            original_name="a.png",
        )

    assert own_spool_entry(event(2, f"spool://{file_id}.v2"))
    assert own_spool_entry(event(2, f"quarantine://{file_id}.v2"))
    assert not own_spool_entry(event(2, f"spool://{file_id}"))  # version 1's, maybe in flight
    assert not own_spool_entry(event(1, f"spool://{file_id}.v2"))
    assert own_spool_entry(event(1, f"spool://{file_id}"))
