"""The commit stage's pure decisions: status ranking, transitions, history details, columns."""

from __future__ import annotations

import hashlib
import uuid
from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.commit.handler import (
    advance_status,
    detail_for,
    stage_fields,
    status_for,
    transition,
)
from shared.errors import InvalidEvent
from shared.events import (
    FileCommitted,
    FileReceived,
    FileRejected,
    FileScanned,
    FileStored,
    FileThumbnailed,
    Thumbnail,
)
from shared.ports import FileLock, StageFields
from shared.status import RANK, TERMINAL

STATUSES = sorted(RANK)


def _received() -> FileReceived:
    return FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source="spool://abc",
        size_bytes=5,
        sha256=hashlib.sha256(b"hello").hexdigest(),
        content_type="image/jpeg",
        original_name="cat.jpg",
    )


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (None, "received", "received"),
        (None, "stored", "stored"),
        ("received", "scanned", "scanned"),
        ("scanned", "stored", "stored"),
        ("stored", "available", "available"),
        ("stored", "scanned", "stored"),  # out of order: never back
        ("scanned", "received", "scanned"),
        ("received", "available", "available"),  # thumbnailed before the rest
        ("received", "rejected", "rejected"),
        ("available", "rejected", "available"),  # terminal never moves
        ("rejected", "available", "rejected"),
        ("rejected", "received", "rejected"),
        ("available", "available", "available"),
        ("scanned", "fallback", "fallback"),
        ("fallback", "stored", "stored"),  # migrated back to S3
        ("stored", "fallback", "stored"),  # a late fallback after a store that got through
        ("fallback", "deferred", "fallback"),
        ("deferred", "stored", "stored"),  # replayed once S3 is back
        ("available", "corrupted", "corrupted"),  # the object was lost after the fact
        ("stored", "corrupted", "corrupted"),
        ("corrupted", "available", "corrupted"),
        ("rejected", "corrupted", "rejected"),
        ("available", "quarantined", "quarantined"),
        ("corrupted", "quarantined", "quarantined"),
        ("quarantined", "available", "quarantined"),
        ("quarantined", "corrupted", "quarantined"),
        ("rejected", "quarantined", "rejected"),
    ],
)
def test_advance_status(current: str | None, incoming: str, expected: str) -> None:
    assert advance_status(current, incoming) == expected


def test_advance_status_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown status 'lost'"):
        advance_status("lost", "received")
    with pytest.raises(ValueError, match="unknown status"):
        advance_status(None, "committed")


@given(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=8))
def test_status_never_goes_back(arrivals: list[str]) -> None:
    current: str | None = None
    for incoming in arrivals:
        new = advance_status(current, incoming)
        if current is not None:
            assert RANK[new] >= RANK[current]
            if current in TERMINAL and incoming != "deleted":  # a deletion ends every status,
                # and a rescan may quarantine what was found lost
                assert new == current or (current, new) == ("corrupted", "quarantined")
            if current == "available":
                assert new in ("available", "corrupted", "quarantined", "deleted")
        current = new


@given(st.permutations(["received", "scanned", "stored", "available"]))
def test_any_arrival_order_of_the_happy_path_ends_available(order: list[str]) -> None:
    assert reduce(advance_status, order, None) == "available"


@given(st.lists(st.sampled_from(["received", "scanned", "stored"]), max_size=5))
def test_first_terminal_status_wins(before: list[str]) -> None:
    start = reduce(advance_status, before, None)
    assert reduce(advance_status, ["rejected", "available"], start) == "rejected"
    assert reduce(advance_status, ["available", "rejected"], start) == "available"


def test_transition_new_file_takes_the_incoming_status() -> None:
    change = transition(
        FileLock(current_version=1, version_status=None, owner="alice"), 1, "received", "r"
    )
    assert (change.version_status, change.file_status, change.status_reason) == (
        "received",
        "received",
        None,
    )


def test_transition_rejection_gives_the_file_a_reason() -> None:
    lock = FileLock(current_version=1, version_status="received", owner="alice")
    change = transition(lock, 1, "rejected", "infected: Eicar-Test-Signature")
    assert change.file_status == "rejected"
    assert change.status_reason == "infected: Eicar-Test-Signature"


def test_transition_that_changes_nothing_leaves_the_file_alone() -> None:
    lock = FileLock(current_version=1, version_status="stored", owner="alice")
    change = transition(lock, 1, "scanned", "late scan")
    assert change.version_status == "stored"
    assert change.file_status is None


def test_transition_of_an_older_version_leaves_the_file_alone() -> None:
    change = transition(
        FileLock(current_version=2, version_status=None, owner="alice"), 1, "stored", "old"
    )
    assert change.version_status == "stored"
    assert change.file_status is None


def test_transition_to_a_newer_version_moves_the_file() -> None:
    change = transition(
        FileLock(current_version=1, version_status=None, owner="alice"), 2, "received", "new"
    )
    assert change.file_status == "received"


def test_status_for_each_event_type() -> None:
    received = _received()
    scanned = received.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27431")
    stored = scanned.follow(FileStored, bucket="b", key="k")
    assert status_for(received) == "received"
    assert status_for(scanned) == "scanned"
    assert status_for(stored) == "stored"
    assert status_for(stored.follow(FileThumbnailed, bucket="b", key="k")) == "available"
    assert status_for(received.follow(FileRejected, reason="invalid", detail="x")) == "rejected"
    with pytest.raises(InvalidEvent, match=r"commit does not take file\.committed"):
        status_for(received.follow(FileCommitted, status="available"))


def test_details_are_short_human_reasons() -> None:
    received = _received()
    assert detail_for(received) == "received: 5 bytes, image/jpeg"
    scanned = received.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27431")
    assert detail_for(scanned) == "ClamAV 1.0.9 / 27431"
    infected = received.follow(
        FileRejected, reason="infected", detail="clamd: FOUND", signature="Eicar-Test-Signature"
    )
    assert detail_for(infected) == "infected: Eicar-Test-Signature"
    invalid = received.follow(FileRejected, reason="invalid", detail="not a JPEG")
    assert detail_for(invalid) == "invalid: not a JPEG"
    policy = received.follow(
        FileRejected, reason="policy", detail="policy: content sniffed as text/html"
    )
    assert detail_for(policy) == "policy: content sniffed as text/html"
    unscannable = received.follow(
        FileRejected,
        reason="unscannable",
        detail="encrypted PDF (Heuristics.Encrypted.PDF)",
        signature="Heuristics.Encrypted.PDF",
    )
    assert detail_for(unscannable) == "unscannable: encrypted PDF (Heuristics.Encrypted.PDF)"
    stored = scanned.follow(FileStored, bucket="b", key="alice/k")
    assert detail_for(stored) == "stored: s3://b/alice/k"
    broken = stored.follow(FileThumbnailed, bucket="b", key="k", thumbnail_error="truncated")
    assert detail_for(broken) == "no thumbnails: truncated"
    none_needed = stored.follow(FileThumbnailed, bucket="b", key="k")
    assert detail_for(none_needed) == "no thumbnails needed"
    thumb = Thumbnail(size_px=256, key="t", width=256, height=171, size_bytes=9000)
    made = stored.follow(FileThumbnailed, bucket="b", key="k", thumbnails=(thumb,))
    assert detail_for(made) == "thumbnails: 256x171"
    assert detail_for(made.follow(FileCommitted, status="available")) == "committed: available"


def test_stage_fields_per_event() -> None:
    received = _received()
    assert stage_fields(received) == StageFields()
    scanned = received.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27431")
    assert stage_fields(scanned) == StageFields(scanner="ClamAV 1.0.9", signature_version="27431")
    rejected = received.follow(
        FileRejected, reason="infected", detail="d", signature="Eicar-Test-Signature"
    )
    assert stage_fields(rejected) == StageFields(
        rejection_reason="infected", signature="Eicar-Test-Signature"
    )
    thumb = Thumbnail(size_px=256, key="t", width=256, height=171, size_bytes=9000)
    thumbnailed = scanned.follow(FileThumbnailed, bucket="b", key="k", thumbnails=(thumb,))
    assert stage_fields(thumbnailed) == StageFields(
        bucket="b",
        object_key="k",
        thumbnails=[
            {
                "size_px": 256,
                "key": "t",
                "width": 256,
                "height": 171,
                "size_bytes": 9000,
                "content_type": "image/webp",  # what the gateway answers for each thumbnail
            }
        ],
    )
