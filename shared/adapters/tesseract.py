"""Tesseract OCR, through pytesseract (Debian's ``tesseract-ocr`` with ``tesseract-ocr-eng`` and
``tesseract-ocr-fra``; seeds 002 and 003: OCR of images and of scanned PDF pages).

pytesseract runs the ``tesseract`` program once per image, so a call costs a process start
(about 0.1 s) plus the reading, and is bounded by ``timeout_s`` (the process is killed past it).
An image larger than ``max_pixels`` is scaled down first. ``OMP_THREAD_LIMIT=1`` (set by the
transform workers at start unless already set) keeps each reading on one core.
"""

from __future__ import annotations

import functools
import math
import os

import pytesseract
from PIL import Image

from shared.errors import ConfigError, TextError
from shared.transform_settings import LANGUAGES_PATTERN


def installed_languages() -> frozenset[str]:
    """The language data Tesseract has (``tesseract --list-langs``), e.g. ``{"eng", "fra",
    "osd"}``.

    Raises:
        ConfigError: the ``tesseract`` program is not installed (``scripts/bootstrap.sh``
            installs it).
    """
    try:
        return frozenset(pytesseract.get_languages(config=""))
    except pytesseract.TesseractNotFoundError:
        raise ConfigError(
            "tesseract is not installed: apt-get install tesseract-ocr tesseract-ocr-eng "
            "tesseract-ocr-fra (scripts/bootstrap.sh does)"
        ) from None


@functools.cache
def prepare(default_languages: str) -> frozenset[str]:
    """At a worker's start: one core per Tesseract process (``OMP_THREAD_LIMIT=1`` unless
    set), and the installed languages, checked to hold ``default_languages``
    (``SLUICE_OCR_DEFAULT_LANG``).

    Raises:
        ConfigError: tesseract is missing, or a default language is not installed (the message
            names ``SLUICE_OCR_DEFAULT_LANG``).
    """
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    languages = installed_languages()
    try:
        check_languages(default_languages, languages)
    except TextError as exc:
        raise ConfigError(f"SLUICE_OCR_DEFAULT_LANG: {exc}") from None
    return languages


def languages_here() -> frozenset[str] | None:
    """The languages of this machine's Tesseract, read once per process; ``None`` when it is
    not installed here (a gateway host may have no OCR: the stage checks again)."""
    try:
        return installed_languages()
    except ConfigError:
        return None


def check_languages(languages: str, installed: frozenset[str] | None) -> str:
    """``languages`` (codes joined by ``+``, e.g. ``eng+fra``) if each is in ``installed``
    (``None``: only the form is checked).

    Raises:
        TextError: a malformed list, or a language whose data is not installed.
    """
    if not LANGUAGES_PATTERN.match(languages):
        raise TextError(f"not an OCR language list (codes joined by '+'): {languages[:80]!r}")
    if installed is None:
        return languages
    missing = [code for code in languages.split("+") if code not in installed]
    if missing:
        raise TextError(
            f"OCR language not installed: {'+'.join(missing)} (installed: "
            f"{', '.join(sorted(installed - {'osd'}))})"
        )
    return languages


def bounded(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image`` scaled down (aspect kept) to at most ``max_pixels`` pixels, in RGB or L mode;
    transparency is flattened on white (Tesseract reads dark text on a light ground)."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        ground = Image.new("RGB", rgba.size, "white")
        ground.paste(rgba, mask=rgba.getchannel("A"))
        image = ground
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    pixels = image.width * image.height
    if pixels > max_pixels:
        factor = math.sqrt(max_pixels / pixels)
        size = (max(1, int(image.width * factor)), max(1, int(image.height * factor)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def read_text(image: Image.Image, languages: str, *, timeout_s: float, max_pixels: int) -> str:
    """The text Tesseract reads in ``image`` (page segmentation: automatic), in
    ``languages``; blocking: call it from a worker thread.

    Raises:
        TextError: Tesseract ran past ``timeout_s`` seconds, or failed on the image.
        ConfigError: the ``tesseract`` program is missing.
    """
    try:
        text: str = pytesseract.image_to_string(
            bounded(image, max_pixels), lang=languages, timeout=timeout_s
        )
    except pytesseract.TesseractNotFoundError:
        raise ConfigError("tesseract is not installed") from None
    except pytesseract.TesseractError as exc:
        raise TextError(f"OCR failed: {exc.message or exc.status}") from None
    except RuntimeError as exc:  # pytesseract: "Tesseract process timeout"
        if "timeout" in str(exc).lower():
            raise TextError(f"OCR timed out after {timeout_s:g} s") from None
        raise
    return text
