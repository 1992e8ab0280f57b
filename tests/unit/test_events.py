"""The event contract: validation, deterministic follow-up ids, and the published schemas."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.events import (
    FileReceived,
    FileRejected,
    FileScanned,
    FileStored,
    json_schemas,
    parse_event,
)

ROOT = Path(__file__).resolve().parents[2]


def received(**overrides: object) -> FileReceived:
    fields: dict[str, object] = {
        "file_id": uuid.uuid4(),
        "owner": "alice",
        "source": "spool://abc",
        "size_bytes": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "content_type": "image/png",
        "original_name": "a.png",
    }
    fields.update(overrides)
    return FileReceived.new(**fields)


def test_round_trip_through_json() -> None:
    event = received(metadata={"album": "holidays", "n": 3})
    assert parse_event(event.model_dump_json().encode()) == event


def test_follow_is_deterministic_and_keeps_the_file_description() -> None:
    event = received()
    first = event.follow(FileScanned, scanner="ClamAV 1.0", signature_version="27000")
    again = event.follow(FileScanned, scanner="ClamAV 1.0", signature_version="27000")
    assert first.event_id == again.event_id != event.event_id
    assert first.causation_id == event.event_id
    assert (first.file_id, first.sha256, first.owner) == (event.file_id, event.sha256, event.owner)
    stored = first.follow(FileStored, bucket="b", key="k")
    assert stored.event_id != first.event_id
    assert "scanner" not in stored.model_dump()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"type": "file.unknown"}',
        json.dumps({**json.loads(received().model_dump_json()), "schema_version": 2}).encode(),
        json.dumps({**json.loads(received().model_dump_json()), "extra": 1}).encode(),
        json.dumps({**json.loads(received().model_dump_json()), "sha256": "XYZ"}).encode(),
        json.dumps(
            {k: v for k, v in json.loads(received().model_dump_json()).items() if k != "owner"}
        ).encode(),
    ],
)
def test_invalid_messages_are_refused(body: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_event(body)


def test_owner_cannot_smuggle_a_path() -> None:
    with pytest.raises(ValidationError):
        received(owner="../bob")


def test_events_are_frozen() -> None:
    event = received()
    with pytest.raises(ValidationError):
        event.owner = "mallory"  # type: ignore[misc]


def test_rejected_carries_reason_and_signature() -> None:
    rejected = received().follow(
        FileRejected, reason="infected", detail="infected: Eicar", signature="Eicar"
    )
    assert parse_event(rejected.model_dump_json().encode()) == rejected


def test_published_schemas_are_current() -> None:
    """docs/events/*.schema.json are generated from the models (`sluice events schemas`)."""
    for routing_key, schema in json_schemas().items():
        path = ROOT / "docs" / "events" / f"{routing_key}.schema.json"
        assert path.exists(), f"missing {path}; run `sluice events schemas`"
        assert json.loads(path.read_text()) == schema, f"{path} is stale"


@pytest.mark.parametrize(
    "overrides",
    [
        {"original_name": "a\x00b.jpg"},
        {"kind": "x\x00"},
        {"metadata": {"k": "v\x00"}},
        {"metadata": {"k\x00": 1}},
        {"metadata": {"nested": ["ok", {"deep": "\x00"}]}},
    ],
)
def test_nul_is_refused_where_postgresql_could_not_store_it(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        received(**overrides)


def test_backslash_text_in_metadata_is_fine() -> None:
    assert received(metadata={"path": "C:\\u0000dir"}).metadata == {"path": "C:\\u0000dir"}


def test_every_event_type_of_the_contract_is_read_back() -> None:
    """Each class in EVENT_TYPES is in the union the run loop decodes with: a consumer bound to
    its routing key would otherwise dead-letter it as an unknown type."""
    from shared.events import (
        EVENT_TYPES,
        FileDeleted,
        FileQuarantined,
        FileRescanned,
        FileRescanRequested,
    )

    base = received()
    made = [
        FileRescanRequested.about(
            base.model_dump(exclude={"type", "event_id", "causation_id", "occurred_at"}),
            bucket="sluice",
            key="alice/k",
            thumbnail_keys=["alice/k.thumb-256.webp"],
            rescan_id=uuid.uuid4(),
        ),
        base.follow(FileRescanned, scanner="ClamAV 1.4.3", signature_version="unknown"),
        base.follow(
            FileQuarantined,
            signature="Sluice.Test.Later",
            scanner="ClamAV 1.4.3",
            signature_version="unknown",
            bucket="sluice",
            quarantine_keys=["_quarantine/alice/k"],
        ),
        base.follow(FileDeleted, reason="owner"),
    ]
    assert {type(event) for event in made} <= set(EVENT_TYPES)
    for event in made:
        assert parse_event(event.model_dump_json().encode()) == event
