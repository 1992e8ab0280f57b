"""The rendition route's pure parts: the allow-list's 400s, If-None-Match, the ETag, and the
errors the OpenAPI document lists."""

from __future__ import annotations

import pytest

from services.gateway.errors import ApiError
from services.gateway.rendering import etag_matches, parse_request
from services.gateway.renditions import RenditionRequest, Renditions
from shared.settings import RenderSettings, ThumbnailSettings

SETTINGS = RenderSettings(sizes=(64, 256, 1024))


def test_defaults_and_one_side_keeps_the_ratio() -> None:
    assert parse_request(SETTINGS, "256", None, "cover", None) == RenditionRequest(
        256, None, "contain", "webp"
    )
    assert parse_request(SETTINGS, "64", "1024", "fill", "png") == RenditionRequest(
        64, 1024, "fill", "png"
    )


@pytest.mark.parametrize(
    ("w", "h", "fit", "fmt", "message"),
    [
        ("300", None, None, None, "w: must be one of 64, 256, 1024"),
        ("256", "0x10", None, None, "h: must be one of 64, 256, 1024"),
        ("\uff12\uff15\uff16", None, None, None, "w: must be one of"),  # full-width digits
        (None, None, None, None, "give w, h or both"),
        ("256", "256", "stretch", None, "fit: must be one of contain, cover, fill"),
        ("256", None, None, "gif", "format: must be one of webp, jpeg, png"),
    ],
)
def test_outside_the_allow_list_is_400(
    w: str | None, h: str | None, fit: str | None, fmt: str | None, message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_request(SETTINGS, w, h, fit, fmt)
    assert caught.value.status_code == 400 and message in caught.value.message


def test_etag_is_strong_and_changes_with_source_and_parameters() -> None:
    one = RenditionRequest(256, 256, "cover", "webp")
    etag = one.etag("a" * 64)
    assert etag.startswith('"') and not etag.startswith("W/")
    assert etag == RenditionRequest(256, 256, "cover", "webp").etag("a" * 64)
    assert etag != one.etag("b" * 64)
    assert etag != RenditionRequest(256, 256, "fill", "webp").etag("a" * 64)
    assert etag_matches(f'"x", W/{etag}', etag) and etag_matches("*", etag)
    assert not etag_matches('"other"', etag) and not etag_matches(None, etag)


def test_renders_past_the_owner_or_process_bound_are_429() -> None:
    settings = RenderSettings(processes=0, max_concurrent=2, max_concurrent_per_owner=1)
    renditions = Renditions(settings, ThumbnailSettings())
    with renditions.slot("alice"):
        with pytest.raises(ApiError) as per_owner:
            with renditions.slot("alice"):
                pass
        assert (per_owner.value.status_code, per_owner.value.code) == (429, "too_many_renders")
        with renditions.slot("bob"):
            with pytest.raises(ApiError) as per_process:
                with renditions.slot("carol"):
                    pass
            assert per_process.value.status_code == 429
            assert per_process.value.headers["Retry-After"]
    with renditions.slot("alice"), renditions.slot("bob"):  # given back
        pass
