"""``filename*`` of a multipart part (RFC 5987 / RFC 2231 notation), as the gateway reads it:
``services.gateway.form.extended_filename``."""

from __future__ import annotations

import pytest

from services.gateway.form import extended_filename


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        (b"form-data; name=\"file\"; filename*=utf-8''%E7%85%A7%E7%89%87.jpg", "\u7167\u7247.jpg"),
        (b"form-data; name=\"file\"; filename*=UTF-8''a%20b.jpg", "a b.jpg"),
        (b"form-data; name=\"file\"; filename*=iso-8859-1''caf%E9.jpg", "caf\u00e9.jpg"),
        # Both: filename* wins (RFC 6266 4.3), whichever comes first.
        (b'form-data; name="file"; filename="x.jpg"; filename*=utf-8\'\'y.jpg', "y.jpg"),
        (b'form-data; name="file"; filename*=utf-8\'\'y.jpg; filename="x.jpg"', "y.jpg"),
        # Bytes the charset cannot decode are replaced, never an error.
        (b"form-data; name=\"file\"; filename*=utf-8''%FF.jpg", "\ufffd.jpg"),
    ],
)
def test_the_extended_notation_is_decoded(disposition: bytes, expected: str) -> None:
    assert extended_filename(disposition) == expected


@pytest.mark.parametrize(
    "disposition",
    [
        None,
        b"",
        b'form-data; name="file"; filename="plain.jpg"',
        'form-data; name="file"; filename="\u7167\u7247.jpg"'.encode(),  # a browser's raw UTF-8
        b'form-data; name="kind"',
    ],
)
def test_without_it_there_is_none(disposition: bytes | None) -> None:
    assert extended_filename(disposition) is None
