"""Unit tests of shared.imaging.rendition on the committed samples: sizes, fits, formats."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from shared.errors import ThumbnailError
from shared.imaging.rendition import render_rendition, target_size

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
ROTATED = (SAMPLES / "photo-rotated.jpg").read_bytes()  # 400x600 stored, EXIF 6: 600x400 upright


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("box", "fit", "expected"),
    [
        ((256, 256), "contain", (256, 171)),
        ((256, 256), "cover", (256, 256)),
        ((256, 64), "fill", (256, 64)),
        ((128, None), "cover", (128, 85)),
        ((None, 200), "fill", (300, 200)),
        ((2048, 2048), "contain", (600, 400)),  # contain never enlarges
    ],
)
def test_size_of_each_fit_on_the_upright_image(
    box: tuple[int | None, int | None], fit: str, expected: tuple[int, int]
) -> None:
    rendition = render_rendition(
        ROTATED, "image/jpeg", width=box[0], height=box[1], fit=fit, format="png"
    )  # type: ignore[arg-type]
    assert _open(rendition.data).size == expected == (rendition.width, rendition.height)


def test_cover_crops_centred_and_the_orientation_is_applied() -> None:
    source = _open(ROTATED)

    upright = ImageOps.exif_transpose(source).convert("RGB")
    rendition = render_rendition(
        ROTATED, "image/jpeg", width=256, height=256, fit="cover", format="png"
    )
    got = _open(rendition.data).convert("RGB")
    # the centred 400x400 square of the upright 600x400 image, scaled to 256x256
    expected = upright.crop((100, 0, 500, 400)).resize((256, 256), Image.Resampling.LANCZOS)
    diff = sum(abs(a - b) for a, b in zip(got.tobytes(), expected.tobytes(), strict=True))
    assert diff / len(got.tobytes()) < 4.0
    rotated_wrong = source.convert("RGB").resize((256, 256))
    wrong = sum(abs(a - b) for a, b in zip(got.tobytes(), rotated_wrong.tobytes(), strict=True))
    assert wrong / len(got.tobytes()) > 10.0


@pytest.mark.parametrize(
    ("fmt", "pil_format", "mime"),
    [("webp", "WEBP", "image/webp"), ("jpeg", "JPEG", "image/jpeg"), ("png", "PNG", "image/png")],
)
def test_format_and_no_metadata(fmt: str, pil_format: str, mime: str) -> None:
    rendition = render_rendition(ROTATED, "image/jpeg", width=128, height=None, format=fmt)  # type: ignore[arg-type]
    image = _open(rendition.data)
    assert (image.format, rendition.content_type, image.mode) == (pil_format, mime, "RGB")
    assert not image.getexif() and "icc_profile" not in image.info


def test_transparency_is_flattened_for_jpeg_and_kept_for_png() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (300, 200), (255, 0, 0, 0)).save(out, format="PNG")
    png = render_rendition(out.getvalue(), "image/png", width=64, height=None, format="png")
    jpeg = render_rendition(out.getvalue(), "image/png", width=64, height=None, format="jpeg")
    assert _open(png.data).mode == "RGBA"
    assert _open(jpeg.data).getpixel((10, 10)) == (255, 255, 255)


def test_a_pdf_and_a_corrupt_image_are_refused() -> None:
    with pytest.raises(ThumbnailError, match="not an image we render"):
        render_rendition(b"%PDF-1.4", "application/pdf", width=64, height=64)
    with pytest.raises(ThumbnailError):
        render_rendition(ROTATED[:2000], "image/jpeg", width=64, height=64)


def test_target_size_needs_a_side() -> None:
    with pytest.raises(ValueError, match="width, a height"):
        target_size(10, 10, None, None, "contain")


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("photo.heic", "image/heic", (128, 128)),
        ("animation.gif", "image/gif", (128, 85)),
        ("photo.webp", "image/webp", (128, 112)),
        ("photo.png", "image/png", (128, 85)),
    ],
)
def test_every_image_type_renders(name: str, content_type: str, expected: tuple[int, int]) -> None:
    data = (SAMPLES / name).read_bytes()
    rendition = render_rendition(data, content_type, width=128, height=None, format="webp")
    assert _open(rendition.data).size == expected
