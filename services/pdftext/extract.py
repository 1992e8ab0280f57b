"""The text of a PDF, page by page, with pypdfium2 (PDFium); OCR for a page without a text
layer (seed 003: PDF processing; seed 002: PDF text; docs/transforms.md).

PDFium is not thread-safe: one document at a time per process (the handler holds a lock).
"""

from __future__ import annotations

from collections.abc import Callable

import pypdfium2 as pdfium
from PIL import Image

from shared.errors import TextError
from shared.transforms import ExtractedText

#: PDF document information keys kept (``get_metadata_dict``).
METADATA_KEYS = ("Title", "Author", "Subject", "Keywords", "Creator", "Producer")


def extract_pdf(
    data: bytes,
    *,
    max_pages: int,
    max_ocr_pages: int,
    render_dpi: int,
    ocr: Callable[[Image.Image], str],
    language: str | None,
) -> ExtractedText:
    """The text of each of the first ``max_pages`` pages of the PDF ``data`` and its document
    information. A page whose text layer holds only whitespace is rendered at ``render_dpi``
    and read by ``ocr`` (at most ``max_ocr_pages`` such pages; later ones stay empty).
    ``language`` is recorded when a page was OCR'd. Blocking.

    Raises:
        TextError: not a readable PDF (corrupt, truncated, encrypted), or ``ocr``'s own.
    """
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise TextError(f"not a readable PDF: {exc}") from None
    try:
        count = len(pdf)
        metadata = {
            key: value
            for key, value in pdf.get_metadata_dict(skip_empty=True).items()
            if key in METADATA_KEYS and isinstance(value, str)
        }
        texts: list[str] = []
        ocr_pages = 0
        for index in range(min(count, max_pages)):
            page = pdf[index]
            try:
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_bounded()
                finally:
                    textpage.close()
                if not text.strip() and ocr_pages < max_ocr_pages:
                    bitmap = page.render(scale=render_dpi / 72, grayscale=True)
                    try:
                        image = bitmap.to_pil()
                    finally:
                        bitmap.close()
                    text = ocr(image)
                    ocr_pages += 1
            finally:
                page.close()
            texts.append(text.replace("\r\n", "\n").replace("\r", "\n"))
    except pdfium.PdfiumError as exc:
        raise TextError(f"not a readable PDF: {exc}") from None
    finally:
        pdf.close()
    return ExtractedText(
        texts=texts,
        pages=count,
        ocr_pages=ocr_pages,
        language=language if ocr_pages else None,
        document_metadata=metadata,
    )
