"""The thumbnail worker's render processes (``shared.imaging.pool``): real child processes,
killed for real by a render function that aborts or SIGKILLs itself on marker inputs
(``tests/integration/crashing_render.py``, imported by the spawned children)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.errors import ThumbnailError
from shared.imaging.pool import RenderPool
from shared.imaging.render import render_thumbnails
from tests.integration import crashing_render

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PHOTO = (SAMPLES / "photo-rotated.jpg").read_bytes()


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    pool = RenderPool(
        processes=2, max_tasks_per_child=100, max_crashes=2, render=crashing_render.render
    )
    yield pool
    await pool.close()


async def test_a_child_renders_what_the_worker_would(pool: RenderPool) -> None:
    assert await pool.render(PHOTO, "image/jpeg") == render_thumbnails(PHOTO, "image/jpeg")
    [pid] = await pool.render(b"pid", "image/jpeg")
    assert int(pid.data) != os.getpid()


async def test_a_thumbnail_error_comes_back_whole(pool: RenderPool) -> None:
    with pytest.raises(ThumbnailError) as caught:
        await pool.render(PHOTO[:2000], "image/jpeg")
    with pytest.raises(ThumbnailError) as here:
        render_thumbnails(PHOTO[:2000], "image/jpeg")
    assert str(caught.value) == str(here.value)
    assert "truncated" in str(caught.value)


@pytest.mark.parametrize("marker", [b"abort", b"kill"])
async def test_a_crashing_image_gets_a_thumbnail_error_and_the_pool_goes_on(
    pool: RenderPool, marker: bytes
) -> None:
    with pytest.raises(ThumbnailError, match="decoder crashed: the image killed 2 render"):
        await pool.render(marker, "image/jpeg")
    assert await pool.render(PHOTO, "image/jpeg") == render_thumbnails(PHOTO, "image/jpeg")


async def test_images_in_flight_beside_a_crash_still_get_their_thumbnails(
    pool: RenderPool,
) -> None:
    expected = render_thumbnails(PHOTO, "image/jpeg")
    results = await asyncio.gather(
        pool.render(PHOTO, "image/jpeg"),
        pool.render(b"abort", "image/jpeg"),
        pool.render(PHOTO, "image/jpeg"),
        pool.render(PHOTO, "image/jpeg"),
        return_exceptions=True,
    )
    assert results[0] == results[2] == results[3] == expected
    assert isinstance(results[1], ThumbnailError)
    assert "decoder crashed" in str(results[1])


async def test_an_image_that_hangs_its_decoder_times_out_and_the_others_go_on() -> None:
    """A render past the timeout has its processes killed (the image beside it is rendered
    again, alone), is retried alone, then gets a permanent ``decoder timed out``."""
    pool = RenderPool(
        processes=2,
        max_tasks_per_child=100,
        max_crashes=2,
        render_timeout_s=2.0,
        render=crashing_render.render,
    )
    try:
        expected = render_thumbnails(PHOTO, "image/jpeg")
        started = asyncio.get_running_loop().time()
        hung, beside = await asyncio.gather(
            pool.render(b"hang", "image/jpeg"),
            pool.render(PHOTO, "image/jpeg"),
            return_exceptions=True,
        )
        elapsed = asyncio.get_running_loop().time() - started
        assert isinstance(hung, ThumbnailError), hung
        assert "decoder timed out: no result in 2 s, 2 render processes killed" in str(hung)
        assert beside == expected
        assert 4.0 <= elapsed < 30.0, elapsed  # two timeouts, not one, and not for ever
        assert await pool.render(PHOTO, "image/jpeg") == expected
    finally:
        await pool.close()


async def test_with_max_crashes_1_the_first_crash_is_final() -> None:
    """With max_crashes=1 the first crash is final: no render alone."""
    pool = RenderPool(
        processes=1, max_tasks_per_child=100, max_crashes=1, render=crashing_render.render
    )
    try:
        with pytest.raises(ThumbnailError, match="killed 1 render process "):
            await pool.render(b"kill", "image/jpeg")
    finally:
        await pool.close()


async def test_processes_are_replaced_after_max_tasks_per_child() -> None:
    pool = RenderPool(
        processes=1, max_tasks_per_child=2, max_crashes=2, render=crashing_render.render
    )
    try:
        pids = [int((await pool.render(b"pid", "image/jpeg"))[0].data) for _ in range(6)]
    finally:
        await pool.close()
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


UNGUARDED_MAIN = """
import asyncio
import multiprocessing
from shared.imaging.pool import RenderPool

# No `if __name__ == "__main__":` guard: each spawned child runs this module again while it
# starts, and its own pool refuses to start a process then, so no render process ever starts.
async def main():
    pool = RenderPool(processes=1, max_tasks_per_child=10, max_crashes=2)
    try:
        await pool.render(b"", "image/jpeg")
    except Exception as exc:
        if multiprocessing.current_process().name != "MainProcess":
            raise  # in a child that is starting: it dies
        print("RESULT", type(exc).__name__, exc, flush=True)
    await pool.close()

asyncio.run(main())
"""


def test_processes_that_cannot_start_are_not_blamed_on_the_image(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_MAIN)
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert results == [
        "RESULT RetryableError render process cannot start: it died before its first task "
        "(content_type=image/jpeg)"
    ], done.stderr[-2000:]
