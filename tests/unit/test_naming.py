"""Object-key naming: any client-sent name becomes one safe key segment (seed 000 key format)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.naming import MAX_NAME_BYTES, object_key, sanitise_name, thumbnail_key


def test_examples() -> None:
    assert sanitise_name("../../etc/passwd") == "etc_passwd"
    assert sanitise_name("a\x00b.jpg") == "a_b.jpg"
    assert sanitise_name("..") == "file"
    assert sanitise_name("photo (1).JPG") == "photo_(1).JPG"
    assert sanitise_name("été 😀.heic") == "été_😀.heic"


def test_long_names_keep_their_extension() -> None:
    name = sanitise_name("x" * 500 + ".jpeg")
    assert name.endswith(".jpeg") and len(name.encode()) <= MAX_NAME_BYTES


@given(st.text(min_size=0, max_size=600))
def test_any_name_becomes_one_safe_segment(original: str) -> None:
    name = sanitise_name(original)
    assert name and len(name.encode()) <= MAX_NAME_BYTES
    assert "/" not in name and "\\" not in name
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name)
    assert not name.startswith(".")
    assert name == sanitise_name(name)


def test_object_key_format() -> None:
    file_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    when = datetime(2026, 11, 21, 9, 30, 5, tzinfo=UTC)
    key = object_key("alice", file_id, when, "../My Photo.jpg")
    assert key == f"alice/{file_id}-20261121T093005Z-My_Photo.jpg"
    assert thumbnail_key(key, 256) == key + ".thumb-256.webp"
    assert thumbnail_key(key, 1024, "image/webp") == key + ".thumb-1024.webp"
    assert thumbnail_key(key, 1024, "image/jpeg") == key + ".thumb-1024.jpg"
    with pytest.raises(KeyError):
        thumbnail_key(key, 1024, "image/png")
