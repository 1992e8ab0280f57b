"""render_thumbnails on hostile and broken images: an outcome, fast, never another exception.

The corpus is the one the bad-image fault test uploads through the whole pipeline
(``tests/faults/corpus.py``); here each case goes straight to the renderer, so a regression
shows up without any service running.
"""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from shared.errors import ThumbnailError
from shared.imaging.render import render_thumbnails
from tests.faults.corpus import (
    THUMBNAILS,
    BadImage,
    bad_images,
    jpeg_scan_bomb,
    sample,
)

CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
}
CASES = bad_images()


def content_type(name: str) -> str:
    return CONTENT_TYPES[name.rsplit(".", 1)[1]]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt EXIF
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_bad_image_gets_thumbnails_or_a_thumbnail_error(case: BadImage) -> None:
    started = time.perf_counter()
    try:
        thumbs = render_thumbnails(case.data, content_type(case.name))
    except ThumbnailError as exc:
        matched = [o for o in case.expect if str(exc).startswith(o)]
        assert matched, f"{case.name}: {exc}; expected one of {sorted(case.expect)}"
    else:
        assert THUMBNAILS in case.expect, f"{case.name} was decoded: {case.what}"
        assert [t.size_px for t in thumbs] == [256, 1024]
        if case.upright is not None:
            width, height = case.upright
            for thumb in thumbs:
                scale = min(1.0, thumb.size_px / max(width, height))
                assert (thumb.width, thumb.height) == (
                    max(1, round(width * scale)),
                    max(1, round(height * scale)),
                )
    # The slowest legitimate case, a 49 Mpx PNG, takes about 1 s on a 2-core machine.
    assert time.perf_counter() - started < 10, f"{case.name} took too long"


def test_jpeg_scan_bomb_is_refused_before_decoding() -> None:
    bomb = jpeg_scan_bomb(4000, 4000, 100_000)  # unguarded, libjpeg needs minutes for this
    started = time.perf_counter()
    with pytest.raises(ThumbnailError, match=r"^decompression bomb: 100000 JPEG scans > limit"):
        render_thumbnails(bomb, "image/jpeg")
    assert time.perf_counter() - started < 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_jpeg_scan_limit_is_500() -> None:
    at_limit = render_thumbnails(jpeg_scan_bomb(64, 48, 500), "image/jpeg", sizes_px=(32,))
    assert [(t.width, t.height) for t in at_limit] == [(32, 24)]
    with pytest.raises(ThumbnailError, match="501 JPEG scans > limit 500"):
        render_thumbnails(jpeg_scan_bomb(64, 48, 501), "image/jpeg", sizes_px=(32,))


def test_progressive_jpeg_from_an_encoder_is_not_mistaken_for_a_scan_bomb() -> None:
    out = io.BytesIO()
    with Image.open(io.BytesIO(sample("photo-rotated.jpg"))) as image:
        image.save(out, format="JPEG", progressive=True, exif=image.info["exif"])
    data = out.getvalue()
    assert 1 < data.count(b"\xff\xda") < 20
    thumbs = render_thumbnails(data, "image/jpeg")
    assert [(t.width, t.height) for t in thumbs] == [(256, 171), (600, 400)]
