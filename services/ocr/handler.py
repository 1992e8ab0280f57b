"""The ocr stage: ``file.stored`` of an image → its text by Tesseract → ``file.text_extracted``
(seed 002: OCR; docs/transforms.md).

Images (JPEG, PNG, GIF, WebP, HEIC/HEIF; the first frame of an animation) are read in the
languages of the upload's metadata ``ocr_lang`` (e.g. ``fra``, ``eng+fra``), else
``SLUICE_OCR_DEFAULT_LANG``; other files pass through with no event (not applicable). An image
that cannot be read (corrupt, a decompression bomb, a language not installed, Tesseract past
``SLUICE_OCR_TIMEOUT_S``) gets ``file.text_failed`` with the reason, never a dead letter: the
file stays ``available``.

As the thumbnail stage, it first checks the event's claim (``shared.claims``: Sluice's bucket,
the file's own key) and the bytes' SHA-256. A redelivered ``file.stored`` whose text object is
there (its metadata names the same original SHA-256) is answered from it without OCR again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
from dataclasses import dataclass

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.adapters import tesseract
from shared.claims import check_stored_object
from shared.errors import InvalidEvent, TextError
from shared.events import BaseEvent, FileStored, FileTextExtracted
from shared.naming import text_key
from shared.originals import read_original
from shared.ports import ObjectStore
from shared.transform_settings import OcrSettings
from shared.transforms import (
    OCR_TYPES,
    ExtractedText,
    event_id_of,
    ocr_languages,
    search_excerpt,
    store_text,
    text_failed,
)

pillow_heif.register_heif_opener()


@dataclass(frozen=True)
class Deps:
    """What the ocr stage works through."""

    storage: ObjectStore
    settings: OcrSettings
    #: Tesseract's installed language data (``tesseract --list-langs``), read at start.
    languages: frozenset[str]
    #: At most ``settings.max_concurrent`` images read at once.
    readings: asyncio.Semaphore
    #: ``SLUICE_TEXT_SEARCH_MAX_CHARS``.
    search_max_chars: int
    #: Decompression-bomb limit of the decoder, pixels (``SLUICE_THUMBNAIL_MAX_PIXELS``).
    max_decode_pixels: int


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Read the text of a stored image; return its ``file.text_extracted`` or
    ``file.text_failed`` (nothing for a file that is not an image).

    Raises:
        InvalidEvent: not a ``file.stored`` event.
        ForgedEvent: another bucket, or a key not the file's own (``shared.claims``).
        ChecksumMismatch: the object read back does not hash to the event's SHA-256.
        SourceMissing: the original is not in the bucket.
        StorageUnavailable: S3 down (retried).
    """
    if not isinstance(event, FileStored):
        raise InvalidEvent(f"ocr stage does not take {event.type}")
    check_stored_object(event, deps.storage.bucket)
    if event.content_type not in OCR_TYPES:
        return []
    try:
        languages = tesseract.check_languages(
            ocr_languages(event, deps.settings.default_lang), deps.languages
        )
    except TextError as exc:
        return [text_failed(event, "ocr", str(exc))]
    done = await _already_extracted(event, deps, languages)
    if done is not None:
        return [done]
    data = await read_original(deps.storage, event)
    read = functools.partial(
        read_image,
        data,
        languages,
        timeout_s=deps.settings.timeout_s,
        max_pixels=deps.settings.max_pixels,
        max_decode_pixels=deps.max_decode_pixels,
    )
    try:
        async with deps.readings:
            text = await asyncio.to_thread(read)
    except TextError as exc:
        return [text_failed(event, "ocr", str(exc))]
    extracted = ExtractedText(texts=[text], pages=1, ocr_pages=1, language=languages)
    stored = await store_text(
        deps.storage, event, "ocr", extracted, search_max_chars=deps.search_max_chars
    )
    return [stored]


def read_image(
    data: bytes, languages: str, *, timeout_s: float, max_pixels: int, max_decode_pixels: int
) -> str:
    """The text of the image ``data`` (its first frame, upright by its EXIF orientation);
    blocking.

    Raises:
        TextError: not a readable image, larger than ``max_decode_pixels``, or Tesseract
            failed or ran past ``timeout_s``.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_decode_pixels:
                raise TextError(
                    f"image too large to read: {image.width * image.height} pixels > limit "
                    f"{max_decode_pixels}"
                )
            image.seek(0)
            upright = ImageOps.exif_transpose(image)
            upright.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TextError(f"not a readable image: {exc}") from None
    return tesseract.read_text(upright, languages, timeout_s=timeout_s, max_pixels=max_pixels)


async def _already_extracted(
    event: FileStored, deps: Deps, languages: str
) -> FileTextExtracted | None:
    """The ``file.text_extracted`` of a previous delivery whose text object is stored (its
    metadata names this original's SHA-256), or ``None``."""
    key = text_key(event.key)
    info = await deps.storage.head(key, bucket=event.bucket)
    if info is None or info.metadata.get("source-sha256") != event.sha256:
        return None
    if info.metadata.get("transform") != "ocr":
        return None
    body = await deps.storage.get_bytes(key, bucket=event.bucket)
    excerpt, truncated = search_excerpt(body.decode("utf-8", "replace"), deps.search_max_chars)
    return event.follow(
        FileTextExtracted,
        event_id=event_id_of(event, FileTextExtracted.routing_key, "ocr"),
        transform="ocr",
        bucket=event.bucket,
        key=event.key,
        text_key=key,
        text_size_bytes=len(body),
        text_sha256=hashlib.sha256(body).hexdigest(),
        pages=1,
        pages_read=1,
        ocr_pages=1,
        language=languages,
        search_text=excerpt,
        search_truncated=truncated,
    )
