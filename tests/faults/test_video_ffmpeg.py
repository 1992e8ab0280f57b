"""ffmpeg past its time, and ffmpeg killed, under a real ``sluice run`` (docs/transforms.md §
Video, Errors; docs/reliability.md).

One pipeline with ``SLUICE_VIDEO_ENABLED`` and ``SLUICE_VIDEO_TIMEOUT_S=6``; the input is a 40 s
1280x720 video made by ffmpeg, whose two renditions take far longer than 6 s to encode on any
machine this runs on. First the HLS ffmpeg of one upload is killed with SIGKILL by the test
while it runs (as the kernel's OOM killer would); then two more uploads run into the timeout,
and the stage kills their process groups itself. Beside them, two PNG uploads the stage passes
over. Each video must end ``available`` with its ``video_error`` (``ffmpeg killed by SIGKILL``,
``ffmpeg timed out after 6 s``) recorded once, nothing dead-lettered, the worker alive, no
ffmpeg or ffprobe process left and no temporary directory left behind.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.pipeline import Pipeline, queue_depths, start_pipeline
from tests.e2e.test_text import upload
from tests.faults.checks import REPORTS

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

TIMEOUT_S = 6


def children(pid: int) -> list[tuple[int, str, str]]:
    """``(pid, comm, cmdline)`` of each live child of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                comm = Path(f"/proc/{child}/comm").read_text().strip()
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except (FileNotFoundError, ProcessLookupError):
                continue
            found.append((int(child), comm, cmdline.decode(errors="replace")))
    return found


def ffmpeg_children(pid: int) -> list[tuple[int, str, str]]:
    return [c for c in children(pid) if c[1] in ("ffmpeg", "ffprobe")]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videofault")


@pytest.fixture(scope="module")
def long_video(tmp: Path) -> bytes:
    out = tmp / "long.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc=duration=40:size=1280x720:rate=25"),
            *("-f", "lavfi", "-i", "sine=frequency=440:duration=40"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", "-shortest", str(out)),
        ],
        check=True,
        timeout=300,
    )
    return out.read_bytes()


@pytest.fixture(scope="module")
def pipeline(services: object, tmp: Path) -> Iterator[Pipeline]:
    (tmp / "tmpdir").mkdir()
    (tmp / "run").mkdir()
    yield from start_pipeline(
        tmp / "run",
        "videofault",
        {
            "SLUICE_VIDEO_ENABLED": "true",
            "SLUICE_VIDEO_TIMEOUT_S": str(TIMEOUT_S),
            "TMPDIR": str(tmp / "tmpdir"),  # where the stage's temporary directories go
        },
    )


def video_settled(pipeline: Pipeline, file_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with pipeline.client() as client:
        while True:
            answer = client.get(f"/v1/files/{file_id}")
            if answer.status_code == 200:
                info: dict[str, Any] = answer.json()
                if info["video_error"] or any(a["kind"] == "hls" for a in info["artefacts"]):
                    return info
            assert pipeline.process.poll() is None, f"sluice died; see {pipeline.log_path}"
            assert time.monotonic() < deadline, f"no video answer: {answer.text}"
            time.sleep(0.2)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(buffer, "PNG")
    return buffer.getvalue()


def test_ffmpeg_killed_and_timed_out(pipeline: Pipeline, long_video: bytes, tmp: Path) -> None:
    started = time.monotonic()
    pid = pipeline.process.pid
    # 1. ffmpeg killed while it transcodes.
    target = upload(pipeline, "killed.mp4", long_video)
    deadline = time.monotonic() + 60
    while True:
        hls = [c for c in ffmpeg_children(pid) if "-master_pl_name" in c[2]]
        if hls:
            break
        assert time.monotonic() < deadline, "no HLS ffmpeg seen"
        time.sleep(0.05)
    os.kill(hls[0][0], signal.SIGKILL)
    killed_info = video_settled(pipeline, target)
    # 2. ffmpeg past SLUICE_VIDEO_TIMEOUT_S, twice; and two images the stage passes over.
    timed = [upload(pipeline, f"slow-{n}.mp4", long_video) for n in range(2)]
    images = [upload(pipeline, f"still-{n}.png", png()) for n in range(2)]
    timed_info = [video_settled(pipeline, file_id) for file_id in timed]
    finals = {f: pipeline.wait_final(f) for f in [target, *timed, *images]}

    assert killed_info["video_error"] == "ffmpeg killed by SIGKILL", killed_info["video_error"]
    for info in timed_info:
        assert info["video_error"] == f"ffmpeg timed out after {TIMEOUT_S} s", info
    statuses = Counter(info["status"] for info in finals.values())
    events = Counter(
        (str(file_id), kind)
        for file_id, kind in pipeline.sql(
            "SELECT file_id, event_type FROM file_events WHERE event_type LIKE 'file.video_%%'"
        )
    )
    duplicates = sum(n - 1 for n in events.values())
    depths = queue_depths(pipeline)
    dead_lettered = sum(n for name, n in depths.items() if name.endswith(".dlq"))
    time.sleep(0.5)  # a kill just sent is reaped within milliseconds
    left = ffmpeg_children(pid)
    temp_left = list((tmp / "tmpdir").glob("sluice-video-*"))
    line = (
        f"[fault video-ffmpeg] accepted={len(finals)} refused=0 "
        f"committed_available={statuses['available']} killed=1 timed_out={len(timed)} "
        f"video_failed={len(events)} dead_lettered={dead_lettered} duplicates={duplicates} "
        f"ffmpeg_left={len(left)} temp_dirs_left={len(temp_left)} "
        f"elapsed={time.monotonic() - started:.1f}s"
    )
    print(line)
    REPORTS.append(line)
    assert statuses == {"available": 5}
    assert set(events) == {(f, "file.video_failed") for f in [target, *timed]}
    assert (duplicates, dead_lettered, left, temp_left) == (0, 0, [], [])
    assert pipeline.process.poll() is None
