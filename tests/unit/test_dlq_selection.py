"""Which dead letters a selection takes (``shared.ops.deadletters.Selection``): pure logic."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ops.deadletters import DeadLetter, Selection

NOW = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)
LETTER = DeadLetter(
    message_id="m1",
    file_id="0b6e2c3e-7d8f-4a51-9c1b-2f3e4d5c6b7a",
    owner="alice",
    event_type="file.received",
    stage="scan",
    error_type="SourceMissing",
    error_message="spooled file is gone",
    attempts=1,
    first_failed_at=NOW - timedelta(hours=2),
    last_failed_at=NOW - timedelta(hours=1),
    body_bytes=100,
    delivery_count=0,
    replayed_at=None,
    replayed_from_error=None,
)


def test_the_default_takes_everything() -> None:
    assert Selection().everything and Selection().matches(LETTER, NOW)
    assert Selection().matches(replace(LETTER, last_failed_at=None, file_id=None), NOW)


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection(stages=("scan",)), True),
        (Selection(stages=("store", "commit")), False),
        (Selection(error_type="SourceMissing"), True),
        (Selection(error_type="sourcemissing"), False),  # exact
        (Selection(file_id=LETTER.file_id), True),
        (Selection(file_id=(LETTER.file_id or "").upper()), True),
        (Selection(file_id="11111111-2222-3333-4444-555555555555"), False),
        (Selection(older_than_s=3600), True),  # exactly as old
        (Selection(older_than_s=3601), False),
        (Selection(stages=("scan",), error_type="SourceMissing", older_than_s=60), True),
        (Selection(stages=("scan",), error_type="ChecksumMismatch", older_than_s=60), False),
    ],
)
def test_every_filter_must_match(selection: Selection, expected: bool) -> None:
    assert selection.matches(LETTER, NOW) is expected


def test_an_age_filter_never_takes_a_message_without_a_failure_time() -> None:
    assert not Selection(older_than_s=0).matches(replace(LETTER, last_failed_at=None), NOW)


def test_bad_selections_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        Selection(stages=("fallback",))  # the fallback has no dead-letter queue of its own
    with pytest.raises(ValueError, match="unknown stage"):
        Selection(stages=())
    with pytest.raises(ValueError, match="older_than_s"):
        Selection(older_than_s=-1)


@given(age_s=st.floats(min_value=0, max_value=1e7), threshold_s=st.floats(0, 1e7))
def test_older_than_compares_the_last_failure_with_now(age_s: float, threshold_s: float) -> None:
    letter = replace(LETTER, last_failed_at=NOW - timedelta(seconds=age_s))
    expected = timedelta(seconds=age_s) >= timedelta(seconds=threshold_s)
    assert Selection(older_than_s=threshold_s).matches(letter, NOW) is expected
