"""Unit tests of shared.imaging.render on the committed samples and on images made here."""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pillow_heif
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageCms, ImageOps, ImageStat

from shared.errors import PermanentError, ThumbnailError
from shared.imaging.render import Thumbnail, is_thumbnailable, render_thumbnails

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

IMAGE_SAMPLES = {
    "photo-rotated.jpg": "image/jpeg",
    "photo.png": "image/png",
    "animation.gif": "image/gif",
    "photo.webp": "image/webp",
    "photo.heic": "image/heic",
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def open_thumb(thumb: Thumbnail) -> Image.Image:
    """The decoded thumbnail, checked to be of the format its content type says."""
    image = Image.open(io.BytesIO(thumb.data))
    assert image.format == {"image/webp": "WEBP", "image/jpeg": "JPEG"}[thumb.content_type]
    image.load()
    return image


def upright(data: bytes) -> Image.Image:
    """Reference decode: the first frame, EXIF orientation applied, as RGB(A)."""
    image: Image.Image = Image.open(io.BytesIO(data))
    image = ImageOps.exif_transpose(image)
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two images over RGB, 0-255, after resizing b to a's size."""
    a_rgb = a.convert("RGB")
    b_rgb = b.convert("RGB").resize(a_rgb.size, Image.Resampling.LANCZOS)
    return sum(ImageStat.Stat(ImageChops.difference(a_rgb, b_rgb)).mean) / 3


def riff_chunks(webp: bytes) -> Iterator[bytes]:
    """The FourCCs of the chunks of a WebP (RIFF) file."""
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    offset = 12
    while offset + 8 <= len(webp):
        fourcc, size = (
            webp[offset : offset + 4],
            struct.unpack("<I", webp[offset + 4 : offset + 8])[0],
        )
        yield fourcc
        offset += 8 + size + (size & 1)


def jpeg_segments(jpeg: bytes) -> Iterator[int]:
    """The markers of a JPEG file's segments up to its first scan (SOS)."""
    assert jpeg[:2] == b"\xff\xd8"
    offset = 2
    while offset + 4 <= len(jpeg):
        assert jpeg[offset] == 0xFF
        marker = jpeg[offset + 1]
        yield marker
        if marker == 0xDA:
            return
        offset += 2 + struct.unpack(">H", jpeg[offset + 2 : offset + 4])[0]


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit greyscale PNG of width x height black pixels: tiny file, huge decode."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- the samples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(IMAGE_SAMPLES))
def test_long_side_is_the_size_or_the_original_long_side(name: str) -> None:
    data = sample(name)
    original = upright(data)
    thumbs = render_thumbnails(data, IMAGE_SAMPLES[name])
    assert [t.size_px for t in thumbs] == [256, 1024]
    for thumb in thumbs:
        image = open_thumb(thumb)
        assert image.size == (thumb.width, thumb.height)
        assert max(image.size) == min(thumb.size_px, max(original.size))
        expected_short = min(original.size) * max(image.size) / max(original.size)
        assert abs(min(image.size) - expected_short) <= 1


@pytest.mark.parametrize("name", sorted(IMAGE_SAMPLES))
def test_output_carries_no_metadata(name: str) -> None:
    for thumb in render_thumbnails(sample(name), IMAGE_SAMPLES[name]):
        image = open_thumb(thumb)
        assert dict(image.getexif()) == {}
        assert not {"exif", "xmp", "icc_profile", "XML:com.adobe.xmp", "comment"} & set(image.info)
        if thumb.content_type == "image/webp":
            assert not {b"EXIF", b"XMP ", b"ICCP"} & set(riff_chunks(thumb.data))
        else:  # APP0 (JFIF) is the only application segment: no APP1 (EXIF, XMP), APP2 (ICC),
            # other APPn or COM
            markers = set(jpeg_segments(thumb.data))
            assert 0xE0 in markers
            assert not {m for m in markers if 0xE1 <= m <= 0xEF or m == 0xFE}


def test_rotated_jpeg_sample_really_carries_orientation_and_gps() -> None:
    with Image.open(SAMPLES / "photo-rotated.jpg") as image:
        exif = image.getexif()
        assert exif[0x0112] == 6
        assert exif.get_ifd(0x8825)[2] == (45.0, 45.0, 36.0)
        assert "xmp" in image.info
        assert image.size == (400, 600)


def test_exif_orientation_is_applied() -> None:
    data = sample("photo-rotated.jpg")
    reference = upright(data)
    assert reference.size == (600, 400)  # the upright photo is landscape, the stored one portrait
    for thumb in render_thumbnails(data, "image/jpeg"):
        image = open_thumb(thumb)
        assert image.width > image.height
        assert mean_abs_diff(image, reference) < 6
        # the comparison can tell a wrong orientation apart
        assert mean_abs_diff(image, reference.transpose(Image.Transpose.ROTATE_180)) > 25


def test_heic_thumbnail_comes_from_the_primary_image_not_the_embedded_preview() -> None:
    data = sample("photo.heic")
    heif = pillow_heif.open_heif(io.BytesIO(data))
    assert heif.info["thumbnails"] == [512]
    primary = heif.to_pillow()
    preview = heif[0].get_thumbnail(0).to_pillow()
    assert mean_abs_diff(primary, preview) > 40  # the preview is a different photograph

    # The trap this guards against: Image.thumbnail() asks draft() for a smaller decode, and
    # pillow-heif answers with the embedded preview when it looks like a scaled copy.
    naive = Image.open(io.BytesIO(data))
    naive.thumbnail((256, 256))
    assert mean_abs_diff(naive, preview) < 10

    for thumb in render_thumbnails(data, "image/heic"):
        image = open_thumb(thumb)
        assert mean_abs_diff(image, primary) < 6
        assert mean_abs_diff(image, preview) > 40


def test_animated_gif_gives_its_first_frame() -> None:
    data = sample("animation.gif")
    with Image.open(io.BytesIO(data)) as gif:
        assert getattr(gif, "n_frames", 1) == 3
        first = gif.convert("RGB")
        gif.seek(2)
        last = gif.convert("RGB")
    assert mean_abs_diff(first, last) > 20
    thumb = render_thumbnails(data, "image/gif", sizes_px=(256,))[0]
    assert mean_abs_diff(open_thumb(thumb), first) < 6
    # the frames differ by about 20.7 at full size, a little less once scaled down
    assert mean_abs_diff(open_thumb(thumb), last) > 15


def test_animated_webp_gives_its_first_frame() -> None:
    red, blue = Image.new("RGB", (300, 200), "red"), Image.new("RGB", (300, 200), "blue")
    data = encode(red, "WEBP", save_all=True, append_images=[blue], duration=100, lossless=True)
    thumb = render_thumbnails(data, "image/webp", sizes_px=(64,))[0]
    r, _g, b = open_thumb(thumb).convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert r > 200 and b < 50


def test_png_transparency_is_kept() -> None:
    thumb = render_thumbnails(sample("photo.png"), "image/png", sizes_px=(256,))[0]
    image = open_thumb(thumb)
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] < 20  # type: ignore[index]  # rounded corner
    assert image.getpixel((image.width // 2, image.height // 2))[3] == 255  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(IMAGE_SAMPLES))
def test_the_preview_is_jpeg_and_the_thumbnail_webp_unless_transparent(name: str) -> None:
    small, preview = render_thumbnails(sample(name), IMAGE_SAMPLES[name])
    assert (small.size_px, small.content_type) == (256, "image/webp")
    transparent = name == "photo.png"  # rounded corners
    assert (preview.size_px, preview.content_type) == (
        1024,
        "image/webp" if transparent else "image/jpeg",
    )
    assert open_thumb(preview).mode == ("RGBA" if transparent else "RGB")


def test_the_jpeg_threshold_and_qualities_are_parameters() -> None:
    data = sample("photo.webp")
    thumbs = render_thumbnails(data, "image/webp", sizes_px=(64, 128, 256), jpeg_min_size_px=128)
    assert [t.content_type for t in thumbs] == ["image/webp", "image/jpeg", "image/jpeg"]
    low, high = (
        render_thumbnails(data, "image/webp", sizes_px=(256,), jpeg_min_size_px=1, jpeg_quality=q)[
            0
        ]
        for q in (20, 95)
    )
    assert len(low.data) < len(high.data) / 2
    grey = render_thumbnails(
        encode(photo_rgb().convert("L"), "PNG"), "image/png", sizes_px=(128,), jpeg_min_size_px=1
    )[0]
    assert grey.content_type == "image/jpeg" and open_thumb(grey).mode == "L"


def test_a_camera_sized_jpeg_keeps_its_quality() -> None:
    """The preview of a 4032x3024 photo, against a full-scale Lanczos render of its pixels: PSNR
    39.8 dB measured (half-scale decode, Hamming, JPEG q80), where the Lanczos + WebP q80
    method 4 renders before were 38.6 dB (bench/bench_render.py prints the figures)."""
    photo = upright(sample("photo-rotated.jpg")).resize((4032, 3024), Image.Resampling.BICUBIC)
    data = encode(photo, "JPEG", quality=90)
    reference = Image.open(io.BytesIO(data)).resize((1024, 768), Image.Resampling.LANCZOS)
    small, preview = render_thumbnails(data, "image/jpeg")
    assert (preview.width, preview.height, preview.content_type) == (1024, 768, "image/jpeg")
    rms = ImageStat.Stat(ImageChops.difference(open_thumb(preview), reference)).rms
    psnr = 10 * math.log10(255**2 / (sum(r * r for r in rms) / 3))
    assert psnr > 37.5
    assert (small.width, small.height) == (256, 192)


def test_pdf_and_other_types_are_not_thumbnailable() -> None:
    for content_type in IMAGE_SAMPLES.values():
        assert is_thumbnailable(content_type)
    assert is_thumbnailable("IMAGE/JPEG; charset=binary")
    assert is_thumbnailable("image/heif")
    for content_type in ("application/pdf", "text/plain", "image/tiff", "image/svg+xml", ""):
        assert not is_thumbnailable(content_type)
    with pytest.raises(ThumbnailError, match="not a thumbnailable content type"):
        render_thumbnails(sample("document.pdf"), "application/pdf")


# --- hostile and broken input --------------------------------------------------------------------


def test_decompression_bomb_is_refused_by_our_limit() -> None:
    data = png_bomb(8000, 8000)  # 64 Mpx: above our 50 Mpx default, below Pillow's own limit
    assert len(data) < 100_000
    with pytest.raises(
        ThumbnailError, match=r"decompression bomb: 64000000 pixels > limit 50000000"
    ):
        render_thumbnails(data, "image/png")


def test_huge_decompression_bomb_is_refused() -> None:
    data = png_bomb(20000, 20000)  # 400 Mpx, beyond Pillow's own hard limit too
    assert len(data) < 200_000
    with pytest.raises(ThumbnailError, match="decompression bomb") as caught:
        render_thumbnails(data, "image/png")
    assert isinstance(caught.value, PermanentError)


def test_max_pixels_is_a_parameter() -> None:
    data = sample("photo-rotated.jpg")
    with pytest.raises(ThumbnailError, match=r"decompression bomb: 240000 pixels > limit 239999"):
        render_thumbnails(data, "image/jpeg", max_pixels=239_999)
    assert render_thumbnails(data, "image/jpeg", max_pixels=240_000)


@pytest.mark.parametrize("name", ["photo-rotated.jpg", "photo.png", "photo.webp", "photo.heic"])
def test_truncated_image_is_refused(name: str) -> None:
    data = sample(name)
    with pytest.raises(ThumbnailError) as caught:
        render_thumbnails(data[: len(data) // 2], IMAGE_SAMPLES[name])
    if name.endswith((".jpg", ".heic")):
        assert str(caught.value).startswith("truncated image")


@pytest.mark.parametrize("cut", [942, 943, 20_000, 100_000, -1])
def test_heic_cut_anywhere_is_refused(cut: int) -> None:
    # libheif alone decodes a cut-short HEIC without error (missing tiles come out blank);
    # 942 is the end of the sample's meta box, where its mdat begins.
    data = sample("photo.heic")
    with pytest.raises(ThumbnailError, match=r"^truncated image"):
        render_thumbnails(data[:cut], "image/heic")


def test_bytes_of_another_type_are_refused() -> None:
    with pytest.raises(ThumbnailError, match="cannot identify image"):
        render_thumbnails(sample("photo.png"), "image/jpeg")
    with pytest.raises(ThumbnailError, match="cannot identify image"):
        render_thumbnails(sample("eicar.pdf"), "image/png")
    with pytest.raises(ThumbnailError, match="cannot identify image"):
        render_thumbnails(b"", "image/heic")


def test_bad_arguments_raise_value_error() -> None:
    data = sample("photo.png")
    for sizes in ([], [0], [20000]):
        with pytest.raises(ValueError, match="sizes_px"):
            render_thumbnails(data, "image/png", sizes_px=sizes)
    with pytest.raises(ValueError, match="webp_quality"):
        render_thumbnails(data, "image/png", webp_quality=101)
    with pytest.raises(ValueError, match="webp_method"):
        render_thumbnails(data, "image/png", webp_method=7)


def test_sizes_are_deduplicated_and_keep_their_order() -> None:
    thumbs = render_thumbnails(sample("photo.webp"), "image/webp", sizes_px=(100, 300, 100, 20))
    assert [(t.size_px, max(t.width, t.height)) for t in thumbs] == [
        (100, 100),
        (300, 300),
        (20, 20),
    ]


# --- modes and colour ----------------------------------------------------------------------------


def photo_rgb(size: tuple[int, int] = (320, 200)) -> Image.Image:
    with Image.open(SAMPLES / "photo.webp") as image:
        return image.convert("RGB").resize(size)


@pytest.mark.parametrize(
    ("mode", "fmt", "expected"),
    [
        ("RGB", "JPEG", "RGB"),
        ("L", "JPEG", "RGB"),
        ("CMYK", "JPEG", "RGB"),
        ("RGBA", "PNG", "RGBA"),
        ("LA", "PNG", "RGBA"),
        ("P", "PNG", "RGB"),
        ("P", "GIF", "RGB"),
        ("1", "PNG", "RGB"),
        ("I;16", "PNG", "RGB"),
    ],
)
def test_modes_become_rgb_or_rgba(mode: str, fmt: str, expected: str) -> None:
    base = photo_rgb()
    if mode in ("RGBA", "LA"):
        image = base.convert(mode)
        image.putalpha(Image.linear_gradient("L").resize(base.size))
    elif mode == "I;16":
        image = base.convert("L").point(lambda v: v * 257, "I").convert("I;16")
    else:
        image = base.convert(mode)
    data = encode(image, fmt)
    thumb = render_thumbnails(data, f"image/{fmt.lower()}", sizes_px=(128,))[0]
    out = open_thumb(thumb)
    assert out.mode == expected
    assert max(out.size) == 128
    if mode in ("RGB", "CMYK", "P"):
        assert mean_abs_diff(out, base) < 12
    if mode in ("L", "I;16"):  # 16 bits scaled to 8, not clipped to white
        assert mean_abs_diff(out, base.convert("L")) < 6


def test_transparent_palette_keeps_alpha_and_opaque_alpha_is_dropped() -> None:
    palette = photo_rgb().quantize(64)
    palette.info["transparency"] = palette.getpixel((0, 0))
    out = open_thumb(render_thumbnails(encode(palette, "GIF"), "image/gif", sizes_px=(64,))[0])
    assert out.mode == "RGBA"
    opaque = photo_rgb().convert("RGBA")
    out = open_thumb(render_thumbnails(encode(opaque, "PNG"), "image/png", sizes_px=(64,))[0])
    assert out.mode == "RGB"


def test_icc_profile_is_applied_then_dropped() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    base = photo_rgb()
    for icc in (srgb, b"not an ICC profile"):
        data = encode(base, "JPEG", quality=95, icc_profile=icc)
        out = open_thumb(render_thumbnails(data, "image/jpeg", sizes_px=(160,))[0])
        assert "icc_profile" not in out.info
        assert mean_abs_diff(out, base) < 8


def test_large_rotated_jpeg_uses_reduced_decode_and_stays_upright() -> None:
    # A camera-sized JPEG (4000x2667 upright, stored 2667x4000 with Orientation 6).
    upright_photo = upright(sample("photo-rotated.jpg")).resize((4000, 2667))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = upright_photo.transpose(Image.Transpose.ROTATE_90)
    data = encode(stored, "JPEG", quality=90, exif=exif.tobytes())
    thumbs = render_thumbnails(data, "image/jpeg")
    assert [(t.width, t.height) for t in thumbs] == [(256, 171), (1024, 683)]
    for thumb in thumbs:
        assert mean_abs_diff(open_thumb(thumb), upright_photo) < 6


# --- property ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 700),
    height=st.integers(1, 700),
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I;16"]),
    sizes=st.lists(st.integers(1, 800), min_size=1, max_size=3),
)
def test_long_side_and_aspect_ratio_property(
    width: int, height: int, mode: str, sizes: list[int]
) -> None:
    image = Image.linear_gradient("L").resize((width, height)).convert(mode)
    thumbs = render_thumbnails(encode(image, "PNG"), "image/png", sizes_px=sizes)
    assert [t.size_px for t in thumbs] == list(dict.fromkeys(sizes))
    long_side = max(width, height)
    for thumb in thumbs:
        out = open_thumb(thumb)
        assert out.size == (thumb.width, thumb.height)
        assert max(out.size) == min(thumb.size_px, long_side)
        scale = max(out.size) / long_side
        assert abs(out.width - width * scale) <= 1
        assert abs(out.height - height * scale) <= 1
