"""The tus 1.0 headers (https://tus.io/protocols/resumable-upload): constants and parsers.

Pure functions, no I/O. Each parser raises :class:`~services.gateway.errors.ApiError` with the
status the protocol gives to a bad value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime

from services.gateway.errors import ApiError

VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "expiration", "checksum")
#: ``Upload-Checksum`` algorithms, as tus names them (the checksum extension), and hashlib's.
CHECKSUM_ALGORITHMS = {"sha256": "sha256", "sha1": "sha1", "md5": "md5"}
#: The Content-Type of every PATCH (and of a creation-with-upload body).
OFFSET_STREAM = "application/offset+octet-stream"
#: The header that tells the client the file id once the upload is complete.
FILE_ID = "Sluice-File-Id"
#: ... and the version number the upload became (1 for a new file).
VERSION_NUMBER = "Sluice-Version-Number"
#: Headers a browser may send (CORS ``Access-Control-Allow-Headers``).
REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Offset",
    "Upload-Checksum",
    "Upload-Defer-Length",
    "Upload-Concat",
    "X-HTTP-Method-Override",
    "X-Requested-With",
)
#: Headers a browser's script may read (CORS ``Access-Control-Expose-Headers``).
EXPOSED_HEADERS = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    FILE_ID,
    VERSION_NUMBER,
)


def check_version(value: str | None) -> None:
    """``Tus-Resumable`` must be ``1.0.0``.

    Raises:
        ApiError: 412 ``unsupported_version`` with ``Tus-Version`` (tus 1.0 § Tus-Resumable).
    """
    if value != VERSION:
        raise ApiError(
            412,
            "unsupported_version",
            f"Tus-Resumable must be {VERSION} (got {value!r})",
            headers={"Tus-Version": VERSION},
        )


def parse_length(value: str | None, name: str) -> int:
    """A non-negative decimal header (``Upload-Length``, ``Upload-Offset``).

    Raises:
        ApiError: 400 ``invalid_request`` when missing or not digits.
    """
    if value is None or not value.strip().isdigit():
        raise ApiError(400, "invalid_request", f"{name} must be a non-negative integer")
    return int(value.strip())


def parse_metadata(value: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value may be absent),
    decoded as UTF-8.

    Raises:
        ApiError: 400 ``invalid_request`` for a duplicated key, bad Base64 or non-UTF-8.
    """
    pairs: dict[str, str] = {}
    if not value or not value.strip():
        return pairs
    for item in value.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not key or key in pairs:
            raise ApiError(400, "invalid_request", f"Upload-Metadata: bad or repeated key {key!r}")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(
                400, "invalid_request", f"Upload-Metadata: {key!r} is not Base64 of UTF-8"
            ) from None
    return pairs


def encode_metadata(pairs: Mapping[str, str]) -> str:
    """The ``Upload-Metadata`` of ``pairs`` (the inverse of :func:`parse_metadata`)."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def parse_checksum(value: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>`` as ``(hashlib name, digest)``.

    Raises:
        ApiError: 400 ``checksum_algorithm_unsupported`` for another algorithm (tus checksum
            extension), 400 ``invalid_request`` for a malformed value.
    """
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    name = CHECKSUM_ALGORITHMS.get(algorithm.lower())
    if name is None:
        raise ApiError(
            400,
            "checksum_algorithm_unsupported",
            f"Upload-Checksum algorithm {algorithm!r} is not one of "
            f"{', '.join(CHECKSUM_ALGORITHMS)}",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise ApiError(400, "invalid_request", "Upload-Checksum digest is not Base64") from None
    if len(digest) != hashlib.new(name).digest_size:
        raise ApiError(400, "invalid_request", f"Upload-Checksum: not a {algorithm} digest")
    return name, digest


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate, as ``Upload-Expires`` carries it."""
    return format_datetime(moment, usegmt=True)
