"""The commit stage's ``file_events`` notice and the ``Last-Event-ID`` of the event streams."""

from __future__ import annotations

import uuid

import pytest

from services.gateway.errors import ApiError
from services.gateway.streams import parse_last_event_id
from shared.history import LAST_EVENT_TYPE, HistoryNotice, parse_notice


def test_a_notice_is_the_file_id_and_the_number_only() -> None:
    file_id = uuid.uuid4()
    payload = f'{{"file_id": "{file_id}", "seq": 3}}'
    assert parse_notice(payload) == HistoryNotice(file_id=file_id, seq=3)
    assert len(payload.encode()) < 8000  # PostgreSQL's NOTIFY payload limit
    assert LAST_EVENT_TYPE == "file.committed"


@pytest.mark.parametrize(
    "payload",
    [
        '{"file_id": "nope", "seq": 1}',
        '{"file_id": "7d0c1e9e-0000-4000-8000-000000000001", "seq": 0}',
        "{",
        "",
    ],
)
def test_anything_else_is_not_a_notice(payload: str) -> None:
    with pytest.raises(ValueError, match="not a file_events notice"):
        parse_notice(payload)


@pytest.mark.parametrize(("header", "seq"), [(None, 0), ("", 0), ("  ", 0), ("7", 7), (" 12 ", 12)])
def test_last_event_id_is_the_last_number_received(header: str | None, seq: int) -> None:
    assert parse_last_event_id(header) == seq


@pytest.mark.parametrize("header", ["abc", "-1", "1.5", "2147483648", "٣"])
def test_a_last_event_id_that_is_no_number_of_the_stream_is_422(header: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_last_event_id(header)
    assert (caught.value.status_code, caught.value.code) == (422, "invalid_request")
