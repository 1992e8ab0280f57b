"""Settings of the optional text transforms (docs/transforms.md; seeds 002 and 003: OCR, PDF
text): ``SLUICE_PDFTEXT_*``, ``SLUICE_OCR_*`` and ``SLUICE_TEXT_*``. Part of
:class:`shared.settings.Settings`; kept apart so that module stays one idea per group.

OCR is CPU-heavy; every bound below is what one message may cost at most.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A Tesseract language list: codes such as ``eng`` or ``fra``, joined by ``+``.
LANGUAGES_PATTERN = re.compile(r"^[a-z_]{3,16}(\+[a-z_]{3,16}){0,4}$")


class PdfTextSettings(BaseSettings):
    """The ``pdftext`` stage (``SLUICE_PDFTEXT_*``): the text of each page of a PDF, read from
    its text layer, or by OCR of the rendered page when it has none."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_PDFTEXT_", frozen=True)

    enabled: bool = Field(False, description="Run the pdftext consumer (`sluice run`).")
    max_pages: int = Field(
        200,
        ge=1,
        le=10_000,
        description="Pages read per PDF; the text of later pages is left out (the event says "
        "how many pages the PDF has and how many were read).",
    )
    max_ocr_pages: int = Field(
        20,
        ge=0,
        le=1000,
        description="Pages without a text layer OCR'd per PDF (0: none); later ones stay empty.",
    )
    render_dpi: int = Field(
        200, ge=72, le=600, description="Resolution of a page rendered for OCR, dots per inch."
    )


class OcrSettings(BaseSettings):
    """Tesseract, for the ``ocr`` stage (images) and the pdftext stage's pages without text
    (``SLUICE_OCR_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_OCR_", frozen=True)

    enabled: bool = Field(False, description="Run the ocr consumer (`sluice run`).")
    default_lang: str = Field(
        "eng+fra",
        description="Tesseract languages when the upload names none (metadata `ocr_lang`), "
        "codes joined by `+`; each must be installed (`tesseract --list-langs`).",
    )
    timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest Tesseract may read one image or page, seconds; past it the "
        "file gets file.text_failed ('OCR timed out').",
    )
    max_pixels: int = Field(
        25_000_000,
        ge=10_000,
        le=200_000_000,
        description="Largest image given to Tesseract, width x height pixels; a larger one "
        "is scaled down to it first.",
    )
    max_concurrent: int = Field(
        1, ge=1, le=64, description="Images or pages OCR'd at once per worker process."
    )

    @field_validator("default_lang")
    @classmethod
    def _languages(cls, value: str) -> str:
        if not LANGUAGES_PATTERN.match(value):
            raise ValueError("Tesseract language codes joined by '+', e.g. 'eng+fra'")
        return value


class TextSettings(BaseSettings):
    """What the commit stage indexes of an extracted text (``SLUICE_TEXT_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_TEXT_", frozen=True)

    search_max_chars: int = Field(
        32_768,
        ge=0,
        le=1_000_000,
        description="Characters of a text carried in its event and indexed for "
        "`GET /v1/files?q=`; the rest of a longer text is not searchable (the event and the "
        "file say `search_truncated`). Characters.",
    )
