"""The video stage on the local storage backend (``SLUICE_STORAGE_BACKEND=local``, S3
unreachable): the playlists' segments are the gateway's signed ``/v1/objects/...`` URLs, and
ffprobe reads every rendition through them, given only the signed master playlist URL and no
header (the playlists' signature and the objects' made with the one key file); a tampered
signature is refused; deleting the video leaves no file on disk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.hls import listed_names, segment_durations
from tests.e2e.pipeline import Pipeline, start_pipeline
from tests.e2e.test_text import upload
from tests.e2e.test_video import ffprobe, hls_of, inputs, path_of, wait_video

__all__ = ["inputs"]  # the module fixture making the test videos

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-video-local")


@pytest.fixture(scope="module")
def pipeline(tmp: Path) -> Iterator[Pipeline]:
    yield from start_pipeline(
        tmp, "e2evideolocal", {"SLUICE_VIDEO_ENABLED": "true"}, local_storage=True
    )


def test_hls_through_the_gateways_signed_urls(
    tmp: Path, pipeline: Pipeline, inputs: dict[str, bytes]
) -> None:
    file_id = upload(pipeline, "pattern.mp4", inputs["mp4"])
    info: dict[str, Any] = wait_video(pipeline, file_id)
    assert info["status"] == "available" and info["video_error"] is None
    hls = hls_of(info)
    assert [r["name"] for r in hls["renditions"]] == ["360p", "720p"]
    master = ffprobe(pipeline, hls["url"])  # the signed URL alone, no header
    sizes = {(s["width"], s["height"]) for s in master["streams"] if s["codec_type"] == "video"}
    assert sizes == {(640, 360), (1280, 720)}
    tampered = hls["url"][:-1] + ("0" if hls["url"][-1] != "0" else "1")
    refused = httpx.get(pipeline.url + tampered, timeout=30)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    with pipeline.client(None) as client:
        assert client.get(path_of(hls["url"])).status_code == 401  # neither key nor signature
    for rendition in hls["renditions"]:
        with pipeline.client() as client:
            playlist = client.get(path_of(rendition["url"])).text  # by the API key
        segments = listed_names(playlist)
        assert all(s.startswith("/v1/objects/") and "signature=" in s for s in segments)
        assert abs(sum(segment_durations(playlist)) - 10) < 0.2
        fetched = httpx.get(pipeline.url + segments[0], timeout=30)  # no API key: the signature
        assert fetched.status_code == 200 and fetched.content[:1] == b"\x47"
        probed = ffprobe(pipeline, rendition["url"])  # by its signature, no header
        video = next(s for s in probed["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (rendition["width"], rendition["height"])
    posters = [a for a in info["artefacts"] if a["kind"] == "poster"]
    assert posters and all(p["url"].startswith("/v1/objects/") for p in posters)

    root = tmp / "objects" / pipeline.bucket
    mine = [p for p in root.rglob("*") if p.is_file() and file_id in str(p)]
    assert len(mine) >= 1 + 2 + 1 + 2 * 3  # original, posters, master, 2 x (playlist + segments)
    with pipeline.client() as client:
        assert client.delete(f"/v1/files/{file_id}").status_code == 202
    deadline = time.monotonic() + 60
    while [p for p in root.rglob("*") if p.is_file() and file_id in str(p)]:
        assert time.monotonic() < deadline, "objects left on disk after the deletion"
        time.sleep(0.3)
