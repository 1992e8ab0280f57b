"""The text transforms' pure parts (docs/transforms.md): the search excerpt and its bound,
which transform reads which type, OCR language checks, the claims on their events, the history
lines, and the handlers' answers that need no Tesseract: a file they do not read, an unknown
language, a corrupt PDF or image, a redelivery answered from the stored text."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pypdf import PdfWriter

from services.commit.texts import detail_of
from services.gateway.errors import ApiError
from services.gateway.fields import parse_metadata
from services.ocr import handler as ocr
from services.ocr.handler import read_image
from services.pdftext.extract import extract_pdf
from shared.adapters.tesseract import check_languages
from shared.claims import check_stored_object
from shared.errors import ForgedEvent, TextError
from shared.events import FileReceived, FileScanned, FileStored, FileTextExtracted
from shared.naming import object_key, text_key
from shared.ports import ObjectInfo
from shared.transform_settings import OcrSettings
from shared.transforms import search_excerpt, text_failed, transform_for

INSTALLED = frozenset({"eng", "fra", "osd"})
DATA = b"\x89PNG\r\n\x1a\n not really a png"


def stored(content_type: str = "image/png", **metadata: Any) -> FileStored:
    received = FileReceived.new(
        file_id=uuid.UUID("0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a01"),
        owner="alice",
        received_at=datetime(2026, 12, 3, 10, 15, tzinfo=UTC),
        source="spool://0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a01",
        size_bytes=len(DATA),
        sha256=hashlib.sha256(DATA).hexdigest(),
        content_type=content_type,
        original_name="scan.png",
        metadata=metadata,
    )
    key = object_key("alice", received.file_id, received.received_at, "scan.png")
    scanned = received.follow(FileScanned, scanner="ClamAV", signature_version="1")
    return scanned.follow(FileStored, bucket="sluice", key=key)


@dataclass
class FakeStore:
    """A bucket in memory, with object metadata."""

    bucket: str = "sluice"
    objects: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    reads: int = 0

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo | None:
        if key not in self.objects:
            return None
        data, metadata = self.objects[key]
        return ObjectInfo(key, len(data), None, metadata=metadata)

    async def get_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        self.reads += 1
        return self.objects[key][0]


def ocr_deps(store: FakeStore) -> ocr.Deps:
    return ocr.Deps(
        storage=store,  # type: ignore[arg-type]
        settings=OcrSettings(),
        languages=INSTALLED,
        readings=asyncio.Semaphore(1),
        search_max_chars=100,
        max_decode_pixels=50_000_000,
    )


def test_search_excerpt_keeps_short_texts_whole_with_single_spaces() -> None:
    assert search_excerpt("Page one\n\n  words\fpage two", 100) == (
        "Page one words page two",
        False,
    )


def test_search_excerpt_cuts_at_a_word_and_says_so() -> None:
    assert search_excerpt("harbour ledger lighthouse", 18) == ("harbour ledger", True)
    assert search_excerpt("a  b\fc", 3) == ("a b", True)


@given(st.text(), st.integers(min_value=0, max_value=200))
def test_search_excerpt_is_bounded_and_a_prefix(text: str, max_chars: int) -> None:
    excerpt, truncated = search_excerpt(text, max_chars)
    flat = " ".join(text.split())
    assert len(excerpt) <= max_chars
    assert flat.startswith(excerpt)
    assert truncated == (len(flat) > max_chars)


def test_each_type_has_its_transform() -> None:
    assert transform_for("application/pdf") == "pdftext"
    assert transform_for("image/heic") == transform_for("image/png") == "ocr"
    assert transform_for("image/svg+xml") is None
    assert transform_for(None) is None


def test_ocr_languages_must_be_installed() -> None:
    assert check_languages("eng+fra", INSTALLED) == "eng+fra"
    with pytest.raises(TextError, match="OCR language not installed: deu"):
        check_languages("eng+deu", INSTALLED)
    with pytest.raises(TextError, match="not an OCR language list"):
        check_languages("../../etc/passwd", INSTALLED)


def test_a_text_key_not_the_files_own_is_forged() -> None:
    event = stored()
    fields = {
        "transform": "ocr",
        "bucket": "sluice",
        "key": event.key,
        "text_size_bytes": 1,
        "text_sha256": "0" * 64,
        "pages": 1,
        "pages_read": 1,
        "ocr_pages": 1,
    }
    own = event.follow(FileTextExtracted, text_key=text_key(event.key), **fields)
    check_stored_object(own, "sluice")
    other = event.follow(FileTextExtracted, text_key="bob/other.text.txt", **fields)
    with pytest.raises(ForgedEvent, match="text key"):
        check_stored_object(other, "sluice")


def test_history_lines() -> None:
    event = stored("application/pdf")
    extracted = event.follow(
        FileTextExtracted,
        transform="pdftext",
        bucket="sluice",
        key=event.key,
        text_key=text_key(event.key),
        text_size_bytes=812,
        text_sha256="0" * 64,
        pages=3,
        pages_read=3,
        ocr_pages=1,
        language="eng+fra",
    )
    assert detail_of(extracted) == "text (pdftext): 3 pages, 1 by OCR (eng+fra), 812 bytes"
    failed = text_failed(event, "pdftext", "not a readable PDF: Data format error")
    assert detail_of(failed) == "no text (pdftext): not a readable PDF: Data format error"


def test_the_two_transforms_answer_with_distinct_event_ids() -> None:
    event = stored()
    assert text_failed(event, "ocr", "x").event_id != text_failed(event, "pdftext", "x").event_id
    assert text_failed(event, "ocr", "x").event_id == text_failed(event, "ocr", "y").event_id


def test_a_corrupt_or_encrypted_pdf_is_a_text_error() -> None:
    def never(image: Any) -> str:
        raise AssertionError("no OCR expected")

    options: dict[str, Any] = {"max_pages": 5, "max_ocr_pages": 1, "render_dpi": 72}
    with pytest.raises(TextError, match="not a readable PDF"):
        extract_pdf(b"%PDF-1.7\n1 0 obj <<", ocr=never, language=None, **options)
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(TextError, match=r"not a readable PDF: .*[Pp]assword"):
        extract_pdf(buffer.getvalue(), ocr=never, language=None, **options)


def test_not_an_image_is_a_text_error() -> None:
    with pytest.raises(TextError, match="not a readable image"):
        read_image(DATA, "eng", timeout_s=5, max_pixels=10_000, max_decode_pixels=10_000)


async def test_ocr_passes_over_what_it_does_not_read() -> None:
    store = FakeStore()
    assert await ocr.handle(stored("application/pdf"), ocr_deps(store)) == []
    assert store.reads == 0


async def test_an_unknown_language_is_recorded_not_dead_lettered() -> None:
    store = FakeStore()
    (answer,) = await ocr.handle(stored(ocr_lang="deu"), ocr_deps(store))
    assert answer.type == "file.text_failed"
    assert "OCR language not installed: deu" in answer.reason  # type: ignore[attr-defined]
    assert store.reads == 0


async def test_a_redelivery_is_answered_from_the_stored_text() -> None:
    event = stored()
    store = FakeStore()
    body = b"Le bateau arrive au port"
    metadata = {"source-sha256": event.sha256, "transform": "ocr"}
    store.objects[text_key(event.key)] = (body, metadata)
    (answer,) = await ocr.handle(event, ocr_deps(store))
    assert isinstance(answer, FileTextExtracted)
    assert answer.search_text == "Le bateau arrive au port"
    assert answer.text_sha256 == hashlib.sha256(body).hexdigest()
    assert store.reads == 1  # the text only, never the original


def test_the_upload_form_checks_ocr_lang_against_installed_languages() -> None:
    assert parse_metadata(b'{"ocr_lang": "fra", "album": "x"}')["ocr_lang"] == "fra"
    for raw, message in (
        (b'{"ocr_lang": "deu"}', "OCR language not installed: deu"),
        (b'{"ocr_lang": 3}', "must be a string"),
        (b'{"ocr_lang": "eng;rm -rf"}', "not an OCR language list"),
    ):
        with pytest.raises(ApiError) as caught:
            parse_metadata(raw)
        assert caught.value.status_code == 422
        assert message in caught.value.message


def test_without_tesseract_only_the_form_is_checked() -> None:
    assert check_languages("deu+ita", None) == "deu+ita"
    with pytest.raises(TextError):
        check_languages("deu ita", None)
