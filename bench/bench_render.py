"""Throughput of ``render_thumbnails`` against raw Pillow, measured in the same run.

Usage::

    python bench/bench_render.py [--seconds 2.0] [--rounds 3]

For each sample image, and for a camera-sized JPEG (the coffee sample upscaled to 4032x3024 in
memory, since reduced-scale JPEG decoding only pays off on large images), it times:

- ``baseline``: raw Pillow, ``Image.open`` + ``thumbnail((256, 256), reducing_gap=None)`` (no
  draft, no reduce) + WebP save at quality 80;
- ``render 256``: ``render_thumbnails(..., sizes_px=(256,))``, the same output as the baseline
  plus orientation, colour management and metadata stripping;
- ``render 256+1024``: ``render_thumbnails`` with the default sizes, what the stage runs;
- ``m2``: the same with ``webp_method=2`` instead of libwebp's default 4 (WebP encoding is most
  of the cost).

Each is run for ``--seconds`` per round, ``--rounds`` times, one thread; the best round counts.
Ratios above 1 mean faster than the baseline. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from services.thumbnail.render import render_thumbnails  # noqa: E402

SAMPLES = {
    "photo-rotated.jpg": "image/jpeg",
    "photo.png": "image/png",
    "animation.gif": "image/gif",
    "photo.webp": "image/webp",
    "photo.heic": "image/heic",
}


def baseline(data: bytes) -> bytes:
    """Raw Pillow: open, 256 px thumbnail without draft, WebP."""
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((256, 256), reducing_gap=None)
        out = io.BytesIO()
        image.save(out, "WEBP", quality=80)
        return out.getvalue()


def camera_jpeg() -> bytes:
    """The coffee sample, upright, upscaled to 4032x3024 and saved as a quality-90 JPEG."""
    with Image.open(REPO_ROOT / "samples" / "photo-rotated.jpg") as image:
        upright = ImageOps.exif_transpose(image).resize((4032, 3024), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    upright.save(out, "JPEG", quality=90)
    return out.getvalue()


def rate(work: Callable[[], object], seconds: float, rounds: int) -> float:
    """Best-of-``rounds`` operations per second, each round running ``work`` for ``seconds``."""
    work()  # warm up: codec initialisation, imports
    best = 0.0
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            work()
            count += 1
        best = max(best, count / elapsed)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="render_thumbnails vs raw Pillow")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case; best counts")
    args = parser.parse_args(argv)

    cases = [
        (name, (REPO_ROOT / "samples" / name).read_bytes(), ct) for name, ct in SAMPLES.items()
    ]
    cases.append(("camera 4032x3024 jpg", camera_jpeg(), "image/jpeg"))

    print(
        f"{'input':<22}{'baseline/s':>11}{'render 256/s':>13}{'ratio':>7}"
        f"{'256+1024/s':>12}{'ratio':>7}{'m2 256+1024/s':>15}{'ratio':>7}"
    )
    for name, data, content_type in cases:
        render = functools.partial(render_thumbnails, data, content_type)
        base = rate(functools.partial(baseline, data), args.seconds, args.rounds)
        one = rate(functools.partial(render, sizes_px=(256,)), args.seconds, args.rounds)
        two = rate(render, args.seconds, args.rounds)
        fast = rate(functools.partial(render, webp_method=2), args.seconds, args.rounds)
        print(
            f"{name:<22}{base:>11.1f}{one:>13.1f}{one / base:>7.2f}"
            f"{two:>12.1f}{two / base:>7.2f}{fast:>15.1f}{fast / base:>7.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
