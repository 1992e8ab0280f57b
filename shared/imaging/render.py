"""Make the thumbnails of an uploaded image: pure, synchronous, CPU-bound.

The thumbnail consumer runs :func:`render_thumbnails` in a worker thread; Pillow releases the GIL
while it decodes, resamples and encodes. Nothing here reads or writes Pillow's global settings
(``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``); the pixel limit is a parameter.

What a thumbnail is (seed 000: photos jpg/jpeg/png/gif/webp/heic/heif):

- long side ``min(size_px, original long side)``: never upscaled, so a thumbnail whose long side
  is below its ``size_px`` records that the original was smaller;
- JPEG when ``size_px`` is at least ``jpeg_min_size_px`` (512 by default: the 1024 px preview)
  and the image is opaque, WebP otherwise (the 256 px thumbnail, and any image with
  transparency), as Immich makes JPEG previews and WebP thumbnails; the choice and its
  measurements are in docs/performance.md § Thumbnails;
- upright: the EXIF Orientation is applied (HEIC: libheif applies ``irot``/``imir`` itself);
- the primary image of a HEIC, never its embedded preview, and the first frame of an animation;
- no metadata: no EXIF (so no GPS position), no XMP, no ICC profile; an image with an ICC
  profile is converted to sRGB first, which is what an untagged WebP means;
- alpha kept when the image has any transparency, CMYK and 16-bit images made 8-bit RGB / L.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from shared.errors import ThumbnailError

__all__ = ["JPEG", "WEBP", "Thumbnail", "ThumbnailType", "is_thumbnailable", "render_thumbnails"]

pillow_heif.register_heif_opener()

#: Pillow format names allowed per content type: bytes that decode as another format are refused.
_FORMATS: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("JPEG",),  # an MPO (multi-picture JPEG) opens through the JPEG factory
    "image/png": ("PNG",),
    "image/gif": ("GIF",),
    "image/webp": ("WEBP",),
    "image/heic": ("HEIF",),
    "image/heif": ("HEIF",),
}

#: The content types of thumbnails.
ThumbnailType = Literal["image/jpeg", "image/webp"]
JPEG: Final = "image/jpeg"
WEBP: Final = "image/webp"

#: The largest width or height a WebP can have (libwebp ``WEBP_MAX_DIMENSION``).
_WEBP_MAX_PX = 16383

#: The filters: the largest thumbnail is made from the decoded image (Hamming; bicubic when a
#: reduced-scale JPEG decode is a little smaller than it, see :data:`_DRAFT_SLACK`), the smaller
#: ones from the largest (Lanczos); ``reduce()`` (a box filter, by an integer factor) first while
#: it leaves at least twice the size to resample. Chosen by measurement (bench/bench_render.py,
#: docs/performance.md § Thumbnails): from a 4032x3024 JPEG decoded at half scale, Hamming costs
#: 18 ms where Lanczos costs 39-50 ms, and its JPEG q80 preview is closer to a full-scale Lanczos
#: render than the Lanczos + WebP previews were.
_SHRINK_FILTER = Image.Resampling.HAMMING
_ENLARGE_FILTER = Image.Resampling.BICUBIC
_SMALLER_FILTER = Image.Resampling.LANCZOS
_REDUCING_GAP = 2.0

#: How much smaller than the largest thumbnail a JPEG's reduced-scale decode may be, as a
#: fraction: a 4032x3024 photo decodes at 1/4 scale (1008x756, 27 ms of CPU for a 2 MB file)
#: rather than 1/2 (2016x1512, 30 ms) for its 1024x768 preview, which is then enlarged by 1.6 %
#: (bicubic, 13 ms) instead of shrunk (Hamming, 19 ms), for the same PSNR against a full-scale
#: Lanczos render (within 0.1 dB). libjpeg's scaled IDCT is itself a good low-pass filter.
_DRAFT_SLACK = 0.03

#: Most scans (SOS markers) a JPEG may have. Each scan of a progressive JPEG is a pass over every
#: block of the image, so a small file of many near-empty scans keeps libjpeg busy for minutes;
#: libjpeg-turbo guards against this with ``TJPARAM_SCANLIMIT``, which its own fuzzers set to
#: 500, but Pillow does not expose it. Encoders write about 10 scans.
_JPEG_MAX_SCANS = 500

#: What Pillow and pillow-heif raise on bytes they cannot decode.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    RuntimeError,
)


@dataclass(frozen=True)
class Thumbnail:
    """One thumbnail.

    ``size_px`` is the requested long side; ``width`` and ``height`` are the real pixel size,
    whose long side is ``min(size_px, original long side)``. ``data`` is the file, of
    ``content_type`` :data:`JPEG` or :data:`WEBP`.
    """

    size_px: int
    width: int
    height: int
    data: bytes
    content_type: ThumbnailType = WEBP


def is_thumbnailable(content_type: str) -> bool:
    """Whether ``content_type`` (a MIME type, parameters ignored) is an image we thumbnail.

    True for image/jpeg, image/png, image/gif, image/webp, image/heic and image/heif (seed 000's
    photo types); False for everything else, application/pdf included.
    """
    return _normalise(content_type) in _FORMATS


def render_thumbnails(
    data: bytes,
    content_type: str,
    *,
    sizes_px: Sequence[int] = (256, 1024),
    max_pixels: int = 50_000_000,
    webp_quality: int = 80,
    webp_method: int = 1,
    jpeg_quality: int = 80,
    jpeg_min_size_px: int = 512,
) -> list[Thumbnail]:
    """Decode ``data`` once and make one thumbnail per distinct size, in the order given.

    ``sizes_px`` are long sides in pixels (1 to 16383); ``max_pixels`` bounds width x height of
    the image, checked from its header before any pixel is decoded. A size of at least
    ``jpeg_min_size_px`` is a JPEG of ``jpeg_quality`` (0-100) unless the image has transparency;
    the others are WebP of ``webp_quality`` (0-100) and ``webp_method``, libwebp's speed/size
    trade-off, 0 (fastest) to 6 (smallest). The defaults are measured (docs/performance.md §
    Thumbnails): on a 4032x3024 photo a 1024 px JPEG q80 encodes in about 2 ms, a WebP q80 in
    14-19 ms at method 0 and 60-70 ms at method 4, and is closer to the reference; a 256 px WebP
    at method 1 costs 2.5 ms instead of 6 at method 4, for about 15 % more bytes.

    The largest thumbnail is made from the decoded image (Hamming filter), the smaller ones from
    it (Lanczos), each after a ``reduce()`` by an integer factor while that leaves at least twice
    the size to resample. A JPEG is decoded at a reduced DCT scale (``Image.draft``) when that
    still gives the largest size, less 3 % (then enlarged with a bicubic filter: a 4032x3024
    photo decodes at 1008x756 for its 1024x768 preview). The EXIF orientation is applied and the
    ICC profile converted once the image is down to the largest size. Pillow's own bomb check
    (``Image.MAX_IMAGE_PIXELS``) still applies on top of ours.

    Raises :class:`ThumbnailError` when ``content_type`` is not thumbnailable, when the bytes are
    not an image of that type, are truncated or corrupt, exceed ``max_pixels``, or are a JPEG of
    more than 500 scans (:data:`_JPEG_MAX_SCANS`); raises
    :class:`ValueError` for out-of-range arguments.
    """
    sizes = list(dict.fromkeys(sizes_px))
    if not sizes or any(not 1 <= s <= _WEBP_MAX_PX for s in sizes):
        raise ValueError(f"sizes_px must be 1..{_WEBP_MAX_PX}, got {list(sizes_px)}")
    if not 0 <= webp_quality <= 100:
        raise ValueError(f"webp_quality must be 0..100, got {webp_quality}")
    if not 0 <= webp_method <= 6:
        raise ValueError(f"webp_method must be 0..6, got {webp_method}")
    if not 0 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be 0..100, got {jpeg_quality}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    media_type = _normalise(content_type)
    if media_type not in _FORMATS:
        raise ThumbnailError(
            f"not a thumbnailable content type: {content_type}", content_type=content_type
        )
    image, (width, height) = _decode(data, media_type, max(sizes), max_pixels)
    by_size: dict[int, Thumbnail] = {}
    for size in sorted(sizes, reverse=True):
        target = _fit(width, height, size)  # from the full size, orientation not applied
        if image.size != target:
            if by_size:
                resample = _SMALLER_FILTER
            elif image.width < target[0] or image.height < target[1]:
                resample = _ENLARGE_FILTER  # a reduced-scale decode, at most 3 % smaller
            else:
                resample = _SHRINK_FILTER
            image = image.resize(target, resample, reducing_gap=_REDUCING_GAP)
        if not by_size:  # the largest: orient, colour-manage and settle the mode once, small
            image = _orient(image, media_type)
            if image.size != target:  # turned by 90 degrees: so are the smaller sizes
                width, height = height, width
            image = _finish(image)
        thumb_type: ThumbnailType = (
            JPEG if size >= jpeg_min_size_px and image.mode != "RGBA" else WEBP
        )
        if thumb_type == JPEG:
            encoded = _encode_jpeg(image, jpeg_quality)
        else:
            encoded = _encode_webp(image, webp_quality, webp_method)
        by_size[size] = Thumbnail(size, image.width, image.height, encoded, thumb_type)
    return [by_size[size] for size in sizes]


def _normalise(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _fit(width: int, height: int, size: int) -> tuple[int, int]:
    """The size of a ``width`` x ``height`` image scaled so its long side is ``size``, or itself."""
    long_side = max(width, height)
    if size >= long_side:
        return width, height
    scale = size / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode(
    data: bytes, media_type: str, largest_px: int, max_pixels: int
) -> tuple[Image.Image, tuple[int, int]]:
    """Open, bomb-check, decode (JPEG: reduced DCT scale) and normalise the mode; return the
    image and its full width and height (a reduced-scale decode is smaller).

    The EXIF orientation is left in ``info`` for :func:`_orient`: turning the image is cheaper
    once it is down to thumbnail size.
    """
    if _FORMATS[media_type] == ("HEIF",):
        _check_heif_complete(data, media_type)
    try:
        image = Image.open(io.BytesIO(data), formats=_FORMATS[media_type])
        width, height = image.size
        if width * height > max_pixels:
            raise ThumbnailError(
                f"decompression bomb: {width * height} pixels > limit {max_pixels}",
                content_type=media_type,
            )
        if image.format in ("JPEG", "MPO"):
            _check_jpeg_scans(data, media_type)
        if image.format in ("JPEG", "MPO") and largest_px < max(width, height):
            # Reduced DCT scale at least as large as the biggest thumbnail, less the slack.
            # Only for JPEG: on a HEIF, pillow-heif's draft() swaps in the file's embedded
            # preview image instead.
            want_w, want_h = _fit(width, height, largest_px)
            slack = 1 - _DRAFT_SLACK
            image.draft("RGB", (max(1, int(want_w * slack)), max(1, int(want_h * slack))))
        image.load()  # the first frame only, for GIF, APNG and animated WebP
        return _normalise_mode(image), (width, height)
    except ThumbnailError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ThumbnailError(f"decompression bomb: {exc}", content_type=media_type) from exc
    except UnidentifiedImageError as exc:
        raise ThumbnailError(
            f"cannot identify image: bytes are not a decodable {media_type}",
            content_type=media_type,
        ) from exc
    except _DECODE_ERRORS as exc:
        kind = "truncated image" if "truncated" in str(exc).lower() else "corrupt image"
        raise ThumbnailError(f"{kind}: {exc}", content_type=media_type) from exc


def _check_jpeg_scans(data: bytes, media_type: str) -> None:
    """Raise ``ThumbnailError("decompression bomb: ...")`` past :data:`_JPEG_MAX_SCANS` scans.

    Counts SOS markers (``FF DA``) in one pass: entropy-coded data never holds one (an ``FF``
    there is stuffed with ``00``), so the count is exact but for ``FF DA`` inside APPn segments
    (an EXIF thumbnail's own scan, ICC or XMP bytes): an upper bound, never an undercount.
    """
    scans = data.count(b"\xff\xda")
    if scans > _JPEG_MAX_SCANS:
        raise ThumbnailError(
            f"decompression bomb: {scans} JPEG scans > limit {_JPEG_MAX_SCANS}",
            content_type=media_type,
        )


def _check_heif_complete(data: bytes, media_type: str) -> None:
    """Raise ``ThumbnailError("truncated image: ...")`` if a HEIF's boxes or item data are cut off.

    libheif (1.23, non-strict decoding, which pillow-heif does not let us change) decodes a
    HEIF whose ``mdat`` is cut short without an error: the missing grid tiles come out blank. So
    the top-level boxes (ISO/IEC 14496-12) must fit in ``data``, and so must every extent the
    ``meta/iloc`` box gives for item data stored in the file. Anything this walk cannot parse is
    left to libheif to judge.
    """
    end = len(data)
    meta: tuple[int, int] | None = None
    for kind, body, stop in _boxes(data, 0, end):
        if stop > end:
            raise ThumbnailError(
                f"truncated image: {kind} box ends at byte {stop}, the file has {end} bytes",
                content_type=media_type,
            )
        if kind == "meta":
            meta = (body + 4, stop)  # meta is a FullBox: version and flags come first
    if meta is None:
        return
    for kind, body, stop in _boxes(data, *meta):
        if kind == "iloc" and stop <= end:
            try:
                extents = list(_iloc_extents(data[body:stop]))
            except IndexError:
                return
            for offset, length in extents:
                if offset + length > end:
                    raise ThumbnailError(
                        f"truncated image: item data ends at byte {offset + length}, "
                        f"the file has {end} bytes",
                        content_type=media_type,
                    )


def _boxes(data: bytes, start: int, stop: int) -> Iterator[tuple[str, int, int]]:
    """ISO BMFF boxes in ``data[start:stop]`` as (type, body offset, end offset); may pass stop."""
    pos = start
    while pos + 8 <= stop:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= stop:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:  # the box runs to the end of its container
            size = stop - pos
        if size < header:
            return  # malformed: libheif will say what is wrong
        yield kind.decode("latin-1"), pos + header, pos + size
        pos += size


def _iloc_extents(iloc: bytes) -> Iterator[tuple[int, int]]:
    """(file offset, length) of every extent stored in the file (construction method 0).

    Follows the ItemLocationBox of ISO/IEC 14496-12, versions 0 to 2; raises IndexError when the
    box is shorter than its fields say.
    """
    pos = 0

    def read(width: int) -> int:
        nonlocal pos
        if pos + width > len(iloc):
            raise IndexError("iloc box too short")
        value = int.from_bytes(iloc[pos : pos + width], "big")
        pos += width
        return value

    version = read(4) >> 24
    sizes = read(2)
    offset_size, length_size = sizes >> 12, (sizes >> 8) & 15
    base_offset_size = (sizes >> 4) & 15
    index_size = sizes & 15 if version in (1, 2) else 0
    for _ in range(read(2 if version < 2 else 4)):
        read(2 if version < 2 else 4)  # item_ID
        method = read(2) & 15 if version in (1, 2) else 0
        read(2)  # data_reference_index
        base = read(base_offset_size)
        for _ in range(read(2)):
            read(index_size)
            offset, length = read(offset_size), read(length_size)
            if method == 0 and length:
                yield base + offset, length


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Bring any decoded mode to L, RGB, RGBA or CMYK (8 bits a channel), keeping ``info``."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA", "CMYK"):
        return image
    if mode.startswith("I"):  # 16-bit greyscale (PNG): scale 0..65535 to 0..255, not clip
        converted = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif mode in ("P", "PA"):
        converted = image.convert("RGBA" if image.has_transparency_data else "RGB")
    elif mode in ("LA", "La", "RGBa"):
        converted = image.convert("RGBA")
    elif mode in ("1", "F"):
        converted = image.convert("L")
    else:  # RGBX, YCbCr, HSV, LAB, ...
        try:
            converted = image.convert("RGB")
        except ValueError as exc:
            raise ThumbnailError(f"unsupported image mode: {mode}") from exc
    converted.info = image.info
    return converted


def _finish(image: Image.Image) -> Image.Image:
    """Convert to sRGB using the ICC profile if any, drop all metadata, and settle the mode.

    Returns an L, RGB or RGBA image with an empty ``info``; RGBA only if some pixel is not
    opaque. An unusable ICC profile is ignored (the pixels are taken as sRGB).
    """
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("L", "RGB", "RGBA", "CMYK"):
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"  # L: a grey profile, into sRGB
        try:
            converted = ImageCms.profileToProfile(
                image,
                ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                ImageCms.createProfile("sRGB"),
                outputMode=out_mode,
            )
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a profile that does not fit the pixels: keep them as they are
        else:
            image = converted if converted is not None else image
    if image.mode == "CMYK":
        image = image.convert("RGB")
    if image.mode == "RGBA":
        alpha_min, _ = image.getchannel("A").getextrema()
        if isinstance(alpha_min, (int, float)) and alpha_min >= 255:
            image = image.convert("RGB")
    image.info = {}  # EXIF (GPS), XMP, ICC, comments: the image is ours, made by _decode
    return image


def _orient(image: Image.Image, media_type: str) -> Image.Image:
    """Apply the EXIF (or XMP) Orientation ``image.info`` still carries, as Pillow reads it.

    ``resize()`` keeps ``info``, so this runs on the resized image. Raises
    :class:`ThumbnailError` for an EXIF block Pillow cannot parse.
    """
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except _DECODE_ERRORS as exc:
        raise ThumbnailError(f"corrupt image: {exc}", content_type=media_type) from exc
    return image


def _encode_webp(image: Image.Image, quality: int, method: int) -> bytes:
    """WebP bytes of ``image`` with no EXIF, XMP or ICC chunk."""
    out = io.BytesIO()
    image.save(
        out, format="WEBP", quality=quality, method=method, exif=b"", xmp=b"", icc_profile=None
    )
    return out.getvalue()


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """Baseline JPEG bytes of ``image`` (L or RGB; 4:2:0 chroma) with a JFIF header only: no
    EXIF, XMP, ICC or comment segment (``image.info`` is empty, see :func:`_finish`)."""
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, exif=b"", xmp=b"", icc_profile=None)
    return out.getvalue()
