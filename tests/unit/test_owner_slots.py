"""The per-owner cap on uploads in progress: 429 past it, a slot back however an upload ends."""

from __future__ import annotations

import contextlib

import pytest

from services.gateway.errors import ApiError
from services.gateway.slots import OwnerSlots


def test_past_the_cap_an_owner_is_refused_429_with_retry_after_and_others_are_not() -> None:
    slots = OwnerSlots(per_owner=2)
    with slots.hold("alice"), slots.hold("alice"):
        with pytest.raises(ApiError) as refused:
            with slots.hold("alice"):
                pass
        with slots.hold("bob"):
            assert (slots.held("alice"), slots.held("bob")) == (2, 1)
    assert (refused.value.status_code, refused.value.code) == (429, "too_many_uploads")
    assert int(refused.value.headers["Retry-After"]) > 0
    assert "2 uploads of this owner are in progress" in refused.value.message
    assert slots.held("alice") == 0


@pytest.mark.parametrize("ending", [ApiError(413, "too_large", "x"), ConnectionError()])
def test_a_slot_is_given_back_whatever_ends_the_upload(ending: BaseException) -> None:
    slots = OwnerSlots(per_owner=1)
    for _ in range(3):
        with contextlib.suppress(type(ending)), slots.hold("alice"):
            raise ending
    assert slots.held("alice") == 0
    with slots.hold("alice"):
        assert slots.held("alice") == 1
