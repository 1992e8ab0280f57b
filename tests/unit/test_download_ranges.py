"""``Range`` / ``If-Range`` of the download routes (RFC 9110 § 14), resolved against a file's
size: ``services.gateway.download.DownloadRequest``."""

from __future__ import annotations

import pytest

from services.gateway.download import DownloadRequest
from services.gateway.errors import ApiError

ETAG = '"' + "ab" * 32 + '"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),  # a suffix longer than the file: all of it
        ("bytes=990-5000", (990, 999)),  # last past the end: cut to it
        ("bytes=999-999", (999, 999)),
        (" bytes = 10 - 19 ", (10, 19)),
        ("Bytes=0-0", (0, 0)),
    ],
)
def test_one_byte_range_is_served(header: str, expected: tuple[int, int]) -> None:
    assert DownloadRequest(header).resolve(1000, ETAG) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "bytes=0-1,5-9",  # several ranges: the whole file (RFC 9110 lets a server do so)
        "items=0-9",
        "bytes=-",
        "bytes=9-0",  # last before first: invalid, ignored
        "bytes=abc",
        "",
    ],
)
def test_anything_else_is_the_whole_file(header: str | None) -> None:
    assert DownloadRequest(header).resolve(1000, ETAG) is None


def test_if_range_other_than_the_etag_is_the_whole_file() -> None:
    assert DownloadRequest("bytes=0-9", ETAG).resolve(1000, ETAG) == (0, 9)
    assert DownloadRequest("bytes=0-9", '"other"').resolve(1000, ETAG) is None
    assert DownloadRequest("bytes=0-9", "Wed, 21 Oct 2015 07:28:00 GMT").resolve(1000, ETAG) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0"])
def test_no_byte_in_the_file_is_416_with_its_size(header: str) -> None:
    with pytest.raises(ApiError) as caught:
        DownloadRequest(header).resolve(1000, ETAG)
    assert caught.value.status_code == 416
    assert caught.value.code == "range_not_satisfiable"
    assert caught.value.headers == {"Content-Range": "bytes */1000"}


def test_an_unknown_size_is_the_whole_file() -> None:
    assert DownloadRequest("bytes=0-9").resolve(None, ETAG) is None
