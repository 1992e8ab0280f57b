"""The small form fields that come with an upload: ``kind`` and ``metadata``.

Both end up in ``file.received`` and, through the commit consumer, in PostgreSQL, whose ``jsonb``
cannot hold ``\\u0000``; so NUL is refused here rather than failing a stage later.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import JsonValue

from services.gateway.errors import ApiError
from shared.adapters.tesseract import check_languages, languages_here
from shared.errors import TextError
from shared.transforms import OCR_LANG_KEY

MAX_KIND_CHARS = 64


def long_kind() -> ApiError:
    """The 422 for a ``kind`` over 64 characters."""
    return ApiError(422, "invalid_request", f"`kind` is longer than {MAX_KIND_CHARS} characters")


def parse_kind(raw: bytes | None) -> str | None:
    """The ``kind`` field: UTF-8 text of at most 64 characters, ``None`` if absent or blank.

    Raises:
        ApiError: 422 ``invalid_request`` for non-UTF-8, too long, or control characters.
    """
    if raw is None:
        return None
    try:
        kind = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_request", "`kind` is not UTF-8 text") from None
    if len(kind) > MAX_KIND_CHARS:
        raise long_kind()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in kind):
        raise ApiError(422, "invalid_request", "`kind` contains control characters")
    return kind or None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_metadata(raw: bytes | None) -> dict[str, JsonValue]:
    """The ``metadata`` field: a JSON object (``{}`` if absent or blank).

    Raises:
        ApiError: 422 ``invalid_request`` for invalid JSON (NaN and Infinity included), a
            value that is not an object, or a NUL character or a lone surrogate (which UTF-8
            cannot encode) anywhere in it.
    """
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_request", f"`metadata` is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_request", "`metadata` must be a JSON object")
    text = json.dumps(value, ensure_ascii=False)  # control characters stay escaped
    if "\\u0000" in text:
        raise ApiError(422, "invalid_request", "`metadata` must not contain NUL (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(
            422, "invalid_request", "`metadata` must not contain a lone surrogate (\\ud800-\\udfff)"
        ) from None
    check_ocr_lang(value)
    return value


def check_ocr_lang(metadata: dict[str, JsonValue]) -> None:
    """Check ``metadata``'s ``ocr_lang`` (the OCR languages of the file, docs/transforms.md):
    a string of Tesseract codes joined by ``+``, each installed on this machine when Tesseract
    is (the ocr and pdftext stages check again where they run).

    Raises:
        ApiError: 422 ``invalid_request`` naming what is wrong.
    """
    if OCR_LANG_KEY not in metadata:
        return
    value = metadata[OCR_LANG_KEY]
    if not isinstance(value, str):
        raise ApiError(422, "invalid_request", f"`metadata.{OCR_LANG_KEY}` must be a string")
    try:
        check_languages(value.strip(), languages_here())
    except TextError as exc:
        raise ApiError(422, "invalid_request", f"`metadata.{OCR_LANG_KEY}`: {exc}") from None
