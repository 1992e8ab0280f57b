"""Thumbnails per CPU-second: ``render_thumbnails`` against the previous way, in the same run.

Usage::

    python bench/bench_render.py [--seconds 2.0] [--rounds 3]

Inputs: each sample image, and two camera-sized JPEGs made in memory from the coffee sample
(4032x3024, quality 90): ``camera smooth`` (upscaled, little fine detail) and ``camera grain``
(the same with 12 % Gaussian noise blended in, so it has the fine detail and the file size,
about 2 MB, of a real photo).

1. Renders per CPU-second (``time.process_time``, so a codec's threads count too) of
   :func:`old_render`, the previous pipeline kept here as the baseline (draft decode, orientation
   at full size, Lanczos for both sizes, WebP q80 method 4 for both), and of
   ``render_thumbnails`` with its defaults (256 px WebP method 1, 1024 px JPEG q80, Hamming for
   the largest size); the ratio new / old.
2. For the camera JPEGs, each step's CPU time and the quality of what it makes, as PSNR (dB)
   against a reference: the image decoded at full scale and resized with Lanczos to the
   thumbnail size, never lossy-encoded. Decode at each DCT scale; each filter for the largest
   size from the half-scale decode (shrinking) and from the quarter-scale one (enlarging, as
   ``render_thumbnails`` does); the 256 px from the 1024 px; every codec setting per size.

3. Wall-clock renders per second of the grain photo with as many at once as the machine has
   cores: in threads of this process (what the worker did before its render pool) and in a
   :class:`RenderPool` of one process per core (what it does now); the ratio pool / threads.

Each timing is the best of ``--rounds`` rounds of ``--seconds``. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from PIL import Image, ImageChops, ImageOps, ImageStat

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from shared.imaging import render  # noqa: E402
from shared.imaging.pool import RenderPool, cpu_count  # noqa: E402

SAMPLES = {
    "photo-rotated.jpg": "image/jpeg",
    "photo.png": "image/png",
    "animation.gif": "image/gif",
    "photo.webp": "image/webp",
    "photo.heic": "image/heic",
}
R = Image.Resampling


def old_render(
    data: bytes, content_type: str, sizes_px: Sequence[int] = (256, 1024)
) -> list[bytes]:
    """The previous ``render_thumbnails``: the baseline. Same checks and decode (a JPEG at the
    reduced DCT scale), then orientation at decoded size, Lanczos (reducing gap 3) for every size,
    colour management, WebP q80 method 4 for every size."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG" and max(sizes_px) < max(image.size):
            image.draft("RGB", render._fit(*image.size, max(sizes_px)))
        image.load()
        image = render._normalise_mode(image)
    ImageOps.exif_transpose(image, in_place=True)
    width, height = image.size
    out = []
    for size in sorted(sizes_px, reverse=True):
        target = render._fit(width, height, size)
        if image.size != target:
            image = image.resize(target, R.LANCZOS, reducing_gap=3.0)
        if not out:
            image = render._finish(image)
        out.append(render._encode_webp(image, 80, 4))
    return out


def new_render(data: bytes, content_type: str) -> list[render.Thumbnail]:
    return render.render_thumbnails(data, content_type)


def camera_jpeg(grain: float = 0.0) -> bytes:
    """The coffee sample, upright, upscaled to 4032x3024, with ``grain`` of Gaussian noise
    blended in, saved as a quality-90 JPEG."""
    with Image.open(REPO_ROOT / "samples" / "photo-rotated.jpg") as image:
        upright = ImageOps.exif_transpose(image).resize((4032, 3024), R.BICUBIC)
    if grain:
        noise = Image.effect_noise(upright.size, 24).convert("RGB")
        upright = Image.blend(upright, noise, grain)
    out = io.BytesIO()
    upright.save(out, "JPEG", quality=90)
    return out.getvalue()


def cpu_ms(work: Callable[[], object], seconds: float, rounds: int) -> float:
    """Best-of-``rounds`` CPU milliseconds per call of ``work``, each round ``seconds`` long."""
    work()  # warm up: codec initialisation, imports
    best = math.inf
    for _ in range(rounds):
        count, start, wall = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - wall < seconds or count == 0:
            work()
            count += 1
        best = min(best, (time.process_time() - start) / count)
    return best * 1000


def psnr(image: Image.Image, reference: Image.Image) -> float:
    """Peak signal-to-noise ratio of ``image`` against ``reference`` over RGB, dB."""
    rms = ImageStat.Stat(ImageChops.difference(image.convert("RGB"), reference)).rms
    mse = sum(r * r for r in rms) / 3
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def throughput(cases: list[tuple[str, bytes, str]], seconds: float, rounds: int) -> None:
    print("renders per CPU-second (256 + 1024 px), old way vs render_thumbnails")
    print(f"{'input':<22}{'old/s':>9}{'new/s':>9}{'ratio':>7}{'old ms':>9}{'new ms':>9}")
    for name, data, content_type in cases:
        old = cpu_ms(functools.partial(old_render, data, content_type), seconds, rounds)
        new = cpu_ms(functools.partial(new_render, data, content_type), seconds, rounds)
        print(
            f"{name:<22}{1000 / old:>9.1f}{1000 / new:>9.1f}{old / new:>7.2f}{old:>9.1f}{new:>9.1f}"
        )


def steps(name: str, data: bytes, seconds: float, rounds: int) -> None:
    """Each step's cost and quality on one camera JPEG (4032x3024)."""
    timed = functools.partial(cpu_ms, seconds=seconds, rounds=rounds)
    with Image.open(io.BytesIO(data)) as full:
        full.load()
        ref = {size: full.resize(render._fit(*full.size, size), R.LANCZOS) for size in (256, 1024)}
    print(f"\n{name}: {len(data) / 1e6:.1f} MB; PSNR against a full-scale Lanczos render")

    def decode(scale: int) -> Image.Image:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (4032 // scale, 3024 // scale))
        image.load()
        return image

    print(
        "  decode   "
        + "   ".join(f"1/{s}: {timed(functools.partial(decode, s)):.1f} ms" for s in (1, 2, 4))
    )
    half = decode(2)
    previews = {}
    line = "  1024 px from the half-scale decode:"
    for label, flt in (
        ("Lanczos", R.LANCZOS),
        ("bicubic", R.BICUBIC),
        ("Hamming", R.HAMMING),
        ("bilinear", R.BILINEAR),
        ("box", R.BOX),
    ):
        previews[label] = half.resize((1024, 768), flt)
        ms = timed(functools.partial(half.resize, (1024, 768), flt))
        line += f"  {label} {ms:.1f} ms {psnr(previews[label], ref[1024]):.1f} dB;"
    print(line.rstrip(";"))
    quarter = decode(4)
    line = f"  1024 px from the quarter-scale decode ({quarter.width}x{quarter.height}), enlarged:"
    for label, flt in (("bicubic", R.BICUBIC), ("Lanczos", R.LANCZOS), ("bilinear", R.BILINEAR)):
        previews[f"1/4 {label}"] = quarter.resize((1024, 768), flt)
        ms = timed(functools.partial(quarter.resize, (1024, 768), flt))
        line += f"  {label} {ms:.1f} ms {psnr(previews[f'1/4 {label}'], ref[1024]):.1f} dB;"
    print(line.rstrip(";"))
    preview = previews["1/4 bicubic"]  # what render_thumbnails does for this size
    line = "  256 px from that 1024 px:"
    for label, flt, gap in (
        ("Lanczos", R.LANCZOS, None),
        ("Lanczos gap 2", R.LANCZOS, 2.0),
        ("bicubic", R.BICUBIC, None),
    ):
        small = preview.resize((256, 192), flt, reducing_gap=gap)
        ms = timed(functools.partial(preview.resize, (256, 192), flt, reducing_gap=gap))
        line += f"  {label} {ms:.1f} ms {psnr(small, ref[256]):.1f} dB;"
    print(line.rstrip(";"))

    print(f"  {'size':<6}{'codec':<14}{'encode ms':>10}{'bytes':>9}{'PSNR dB':>9}")
    sources = {1024: preview, 256: preview.resize((256, 192), R.LANCZOS, reducing_gap=2.0)}
    for size, image in sources.items():
        codecs: list[tuple[str, str, dict[str, object]]] = [
            (f"WebP q80 m{m}", "WEBP", {"quality": 80, "method": m}) for m in (0, 1, 2, 4, 6)
        ] + [(f"JPEG q{q}", "JPEG", {"quality": q}) for q in (75, 80, 85, 90)]
        for label, fmt, params in codecs:
            out = encode(image, fmt, **params)
            ms = timed(functools.partial(encode, image, fmt, **params))
            quality = psnr(decoded(out), ref[size])
            print(f"  {size:<6}{label:<14}{ms:>10.2f}{len(out):>9}{quality:>9.2f}")

    old = old_render(data, "image/jpeg")
    new = new_render(data, "image/jpeg")
    print("  what the pipeline stores:")
    for (size, old_bytes), thumb in zip(
        zip((1024, 256), old, strict=True), reversed(new), strict=True
    ):
        old_db, new_db = psnr(decoded(old_bytes), ref[size]), psnr(decoded(thumb.data), ref[size])
        print(
            f"    {size:>4} px  old image/webp m4 {len(old_bytes):>7} B {old_db:.2f} dB"
            f"   new {thumb.content_type} {len(thumb.data):>7} B {new_db:.2f} dB"
        )


async def parallel(data: bytes, seconds: float, rounds: int) -> None:
    """Wall-clock renders per second, one per core at once: threads, then the render pool."""
    cores = cpu_count()

    async def rate(render_one: Callable[[], Awaitable[object]]) -> float:
        await asyncio.gather(*(render_one() for _ in range(cores)))  # warm up, start processes
        best = 0.0
        for _ in range(rounds):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                await asyncio.gather(*(render_one() for _ in range(cores)))
                count += cores
            best = max(best, count / (time.perf_counter() - start))
        return best

    threads = await rate(lambda: asyncio.to_thread(new_render, data, "image/jpeg"))
    pool = RenderPool(processes=cores, max_tasks_per_child=200, max_crashes=2)
    try:
        processes = await rate(lambda: pool.render(data, "image/jpeg"))
    finally:
        await pool.close()
    print(
        f"\ncamera grain, {cores} at once, wall clock: threads {threads:.1f}/s, "
        f"render pool of {cores} processes {processes:.1f}/s, ratio {processes / threads:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="render_thumbnails vs the previous way")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case; best counts")
    args = parser.parse_args(argv)

    cameras = [("camera smooth", camera_jpeg()), ("camera grain", camera_jpeg(grain=0.12))]
    cases = [
        (name, (REPO_ROOT / "samples" / name).read_bytes(), ct) for name, ct in SAMPLES.items()
    ]
    cases += [(name, data, "image/jpeg") for name, data in cameras]
    throughput(cases, args.seconds, args.rounds)
    for name, data in cameras:
        steps(name, data, args.seconds / 4, args.rounds)
    asyncio.run(parallel(cameras[1][1], args.seconds, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
