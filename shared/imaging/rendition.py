"""Make one rendition of an image on demand: pure, synchronous, CPU-bound.

``GET /v1/files/{id}/render`` (docs/files-api.md § Renditions on demand) runs
:func:`render_rendition` in the gateway's render pool (:mod:`shared.imaging.pool`). It decodes
as the thumbnails do (:mod:`shared.imaging.render`: the same pixel limit, JPEG scan limit, HEIF
checks, reduced-scale JPEG decoding, first frame only), applies the EXIF orientation, converts
an ICC-tagged image to sRGB and drops every metadata block (EXIF and its GPS position, XMP,
ICC). The box is ``width`` x ``height`` pixels of the upright image:

- ``contain``: the whole image, scaled to fit inside the box, ratio kept, never enlarged;
- ``cover``: scaled (up or down) so it covers the box, ratio kept, then cropped centred to
  exactly ``width`` x ``height``;
- ``fill``: scaled to exactly ``width`` x ``height``, ratio not kept;
- one side ``None``: the other side is that many pixels and the ratio is kept (never enlarged);
  ``fit`` is then irrelevant.

Formats: WebP (lossy), JPEG (baseline; transparency flattened on white) and PNG (lossless).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Final, Literal

from PIL import Image, ImageOps

from shared.errors import ThumbnailError
from shared.imaging.render import (
    _DECODE_ERRORS,
    _FORMATS,
    _WEBP_MAX_PX,
    _decode,
    _encode_jpeg,
    _encode_webp,
    _finish,
    _normalise,
    _orient,
)

__all__ = ["FITS", "FORMATS", "MEDIA_TYPES", "Fit", "Format", "Rendition", "render_rendition"]

Fit = Literal["contain", "cover", "fill"]
Format = Literal["webp", "jpeg", "png"]
FITS: Final[tuple[Fit, ...]] = ("contain", "cover", "fill")
FORMATS: Final[tuple[Format, ...]] = ("webp", "jpeg", "png")
#: The content type of each rendition format.
MEDIA_TYPES: Final[dict[Format, str]] = {
    "webp": "image/webp",
    "jpeg": "image/jpeg",
    "png": "image/png",
}
#: EXIF orientations that turn the image by 90 degrees (width and height swap).
_TURNED = frozenset({5, 6, 7, 8})
_RESAMPLE = Image.Resampling.LANCZOS


@dataclass(frozen=True)
class Rendition:
    """One rendition: ``data`` is a file of ``content_type``, ``width`` x ``height`` pixels."""

    width: int
    height: int
    data: bytes
    content_type: str


def target_size(
    width: int, height: int, box_w: int | None, box_h: int | None, fit: Fit
) -> tuple[int, int]:
    """The rendition's size for an upright ``width`` x ``height`` image (pixels).

    >>> target_size(4032, 3024, 1024, 1024, "contain"), target_size(4032, 3024, 256, None, "fill")
    ((1024, 768), (256, 192))
    >>> target_size(4032, 3024, 512, 512, "cover"), target_size(100, 50, 512, 512, "contain")
    ((512, 512), (100, 50))

    Raises ValueError when both sides are ``None``.
    """
    if box_w is None and box_h is None:
        raise ValueError("give a width, a height or both")
    if box_w is None or box_h is None:
        scale = min(1.0, box_w / width) if box_w is not None else min(1.0, box_h / height)  # type: ignore[operator]
        return max(1, round(width * scale)), max(1, round(height * scale))
    if fit == "contain":
        scale = min(1.0, box_w / width, box_h / height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return box_w, box_h


def render_rendition(
    data: bytes,
    content_type: str,
    *,
    width: int | None,
    height: int | None,
    fit: Fit = "contain",
    format: Format = "webp",
    max_pixels: int = 50_000_000,
    webp_quality: int = 80,
    webp_method: int = 1,
    jpeg_quality: int = 80,
) -> Rendition:
    """Decode ``data`` (an image of ``content_type``) and render it into the box, see the module.

    ``width``/``height`` are pixels (1 to 16383, one may be ``None``); ``max_pixels`` bounds
    width x height of the source, checked from its header before any pixel is decoded.

    Raises:
        ThumbnailError: not an image type we decode, not an image of that type, truncated,
            corrupt, over ``max_pixels``, or a JPEG of more than 500 scans.
        ValueError: both sides ``None``, a side out of range, an unknown fit or format.
    """
    for side in (width, height):
        if side is not None and not 1 <= side <= _WEBP_MAX_PX:
            raise ValueError(f"width and height must be 1..{_WEBP_MAX_PX}, got {side}")
    if fit not in FITS or format not in FORMATS:
        raise ValueError(f"fit must be one of {FITS}, format one of {FORMATS}")
    if width is None and height is None:
        raise ValueError("give a width, a height or both")
    media_type = _normalise(content_type)
    if media_type not in _FORMATS:
        raise ThumbnailError(f"not an image we render: {content_type}", content_type=content_type)
    raw_w, raw_h, turned = _probe(data, media_type)
    upright = (raw_h, raw_w) if turned else (raw_w, raw_h)
    out_w, out_h = target_size(*upright, width, height, fit)
    # The decode scale: the long side the (unturned) image needs so the box is covered.
    scale = max(out_w / upright[0], out_h / upright[1])
    if fit == "contain" or width is None or height is None:
        scale = min(out_w / upright[0], out_h / upright[1])
    largest_px = max(1, math.ceil(max(raw_w, raw_h) * scale))
    image, _ = _decode(data, media_type, largest_px, max_pixels)
    image = _orient(image, media_type)  # upright from here on
    if fit == "cover" and width is not None and height is not None:
        image = ImageOps.fit(image, (out_w, out_h), _RESAMPLE, centering=(0.5, 0.5))
    elif image.size != (out_w, out_h):
        image = image.resize((out_w, out_h), _RESAMPLE, reducing_gap=2.0)
    image = _finish(image)
    return Rendition(
        image.width,
        image.height,
        _encode(image, format, webp_quality, webp_method, jpeg_quality),
        MEDIA_TYPES[format],
    )


def _probe(data: bytes, media_type: str) -> tuple[int, int, bool]:
    """Width, height (as stored) and whether the EXIF orientation turns the image, from the
    header only; an unreadable header gives a size that disables the reduced-scale decode, so
    :func:`~shared.imaging.render._decode` reports the error."""
    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS[media_type]) as probe:
            orientation = probe.getexif().get(0x0112, 1)
            return probe.width, probe.height, orientation in _TURNED
    except (Image.DecompressionBombError, *_DECODE_ERRORS):
        return _WEBP_MAX_PX, _WEBP_MAX_PX, False


def _encode(
    image: Image.Image, format: Format, webp_quality: int, webp_method: int, jpeg_quality: int
) -> bytes:
    """The bytes of ``image`` (L, RGB or RGBA, no metadata) in ``format``."""
    if format == "webp":
        return _encode_webp(image, webp_quality, webp_method)
    if format == "jpeg":
        if image.mode == "RGBA":  # JPEG has no alpha: flatten on white
            flat = Image.new("RGB", image.size, (255, 255, 255))
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        return _encode_jpeg(image, jpeg_quality)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()
