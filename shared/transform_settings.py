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


class VideoSettings(BaseSettings):
    """The ``video`` stage (``SLUICE_VIDEO_*``): a poster frame and an HLS rendition of MP4,
    QuickTime and WebM uploads, by Debian's ``ffmpeg`` and ``ffprobe`` (docs/transforms.md;
    seed 002: HLS streaming). Each bound is what one message may cost at most."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_VIDEO_", frozen=True)

    enabled: bool = Field(False, description="Run the video consumer (`sluice run`).")
    timeout_s: float = Field(
        600.0,
        gt=0,
        le=7200,
        description="Longest one ffmpeg or ffprobe run may take, seconds; past it the process "
        "is killed and the file gets file.video_failed ('ffmpeg timed out').",
    )
    threads: int = Field(
        2,
        ge=1,
        le=64,
        description="Threads per ffmpeg process (`-threads`), i.e. cores one video may use.",
    )
    max_duration_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="Longest video transcoded, seconds (ffprobe's duration); a longer one gets "
        "file.video_failed without being transcoded.",
    )
    rendition_heights_px: tuple[int, ...] = Field(
        (360, 720),
        min_length=1,
        max_length=4,
        description="Heights of the HLS renditions (of the short side for a portrait video), "
        "pixels; never above the source's, so a small video gets fewer.",
    )
    segment_s: int = Field(
        6, ge=2, le=30, description="Target length of an HLS segment, seconds (`-hls_time`)."
    )
    max_concurrent: int = Field(
        1, ge=1, le=16, description="Videos transcoded at once per worker process."
    )

    @field_validator("rendition_heights_px")
    @classmethod
    def _heights(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 144 or h > 2160 or h % 2 for h in value):
            raise ValueError("even heights from 144 to 2160 pixels, e.g. '360,720'")
        return tuple(sorted(set(value)))
