"""Free text made safe at the event models' boundary (``shared.text``, ``shared.events``)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.gateway.errors import ApiError
from services.gateway.fields import parse_metadata
from shared.events import FileReceived, FileThumbnailed, parse_event
from shared.text import has_unstorable, make_safe


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_a_safe_text_is_storable_bounded_and_free_of_controls(text: str, max_chars: int) -> None:
    safe = make_safe(text, max_chars)
    assert len(safe) <= max_chars
    assert not has_unstorable(safe)
    safe.encode("utf-8")  # a lone surrogate would raise here
    assert all(ch in "\t\n" or not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F) for ch in safe)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_plain_text_within_bounds_is_kept_as_it_is(text: str) -> None:
    assert make_safe(text, len(text) + 1) == text


def test_unsafe_characters_stay_readable_as_escapes() -> None:
    assert (
        make_safe("bad\x00byte\x1b[31m\ud800 here\n", 100) == "bad\\x00byte\\x1b[31m\\ud800 here\n"
    )
    assert make_safe("x" * 10, 4) == "xxx…"


def test_a_decoder_message_with_nul_reaches_the_model_safe() -> None:
    """A thumbnail error as a HEIC decoder wrote it (NUL, ESC, 10,000 characters), in a message
    body as the run loop reads it: the event parses, its text escaped and cut to 2048."""
    body = {
        "type": "file.thumbnailed",
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-12-01T10:00:00Z",
        "file_id": str(uuid.uuid4()),
        "owner": "alice",
        "received_at": "2026-12-01T10:00:00Z",
        "source": "spool://x.bin",
        "size_bytes": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "content_type": "image/heic",
        "original_name": "photo.heic",
        "bucket": "sluice",
        "key": "alice/x-photo.heic",
        "thumbnail_error": "heif: Invalid input\u0000\u0000: \u001b" + "e" * 10_000,
    }
    event = parse_event(json.dumps(body).encode())
    assert isinstance(event, FileThumbnailed)
    assert event.thumbnail_error is not None
    assert event.thumbnail_error.startswith("heif: Invalid input\\x00\\x00: \\x1b")
    assert len(event.thumbnail_error) == 2048 and event.thumbnail_error.endswith("…")


@pytest.mark.parametrize("name", ["cat\ud800.jpg", "cat\x00.jpg"])
def test_a_callers_name_that_cannot_be_stored_is_refused_not_rewritten(name: str) -> None:
    with pytest.raises(ValidationError, match="original_name"):
        FileReceived.new(
            file_id=uuid.uuid4(),
            owner="alice",
            source="spool://x.bin",
            size_bytes=3,
            sha256=hashlib.sha256(b"abc").hexdigest(),
            content_type="image/jpeg",
            original_name=name,
        )


def test_metadata_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(ValidationError, match="lone surrogate"):
        FileReceived.new(
            file_id=uuid.uuid4(),
            owner="alice",
            source="spool://x.bin",
            size_bytes=3,
            sha256=hashlib.sha256(b"abc").hexdigest(),
            content_type="image/jpeg",
            original_name="cat.jpg",
            metadata={"note": "a\udc80b"},
        )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"note": "a\\ud800b"}', "lone surrogate"),
        (b'{"\\udc00": 1}', "lone surrogate"),
        (b'{"note": "a\\u0000b"}', "NUL"),
    ],
)
def test_the_gateway_answers_422_for_metadata_postgresql_cannot_store(
    raw: bytes, message: str
) -> None:
    with pytest.raises(ApiError, match=message) as caught:
        parse_metadata(raw)
    assert caught.value.status_code == 422


def test_the_gateway_keeps_an_escaped_surrogate_pair_as_the_character_it_is() -> None:
    assert parse_metadata(b'{"mood": "\\ud83d\\ude00"}') == {"mood": "\U0001f600"}
