"""Renditions on demand through the whole pipeline (``sluice run``), on both storage backends.

A photo and a PDF are uploaded and committed; ``GET /v1/files/{id}/render`` then renders the
photo in the gateway's render process, stores the rendition beside the original (in the bucket,
or under ``SLUICE_STORAGE_LOCAL_DIR``), serves the stored copy on the second request without
rendering again (the gateway's ``sluice_renditions_rendered_total``), answers 304 to its ETag,
404 to another owner, and 415 to the PDF. ``DELETE`` then purges the renditions with the file.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from shared import devservices
from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline

SAMPLES = ROOT / "samples"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["s3", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def pipeline(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Pipeline, Path]]:
    tmp = tmp_path_factory.mktemp(f"e2e-render-{backend}")
    for started in start_pipeline(tmp, f"e2erender{backend}", local_storage=backend == "local"):
        yield started, tmp


def _rendered(pipeline: Pipeline) -> float:
    text = httpx.get(f"{pipeline.metrics_url}/metrics", timeout=10).text
    found = re.findall(
        r'^sluice_renditions_rendered_total\{[^}]*outcome="ok"[^}]*\} (\S+)$', text, re.M
    )
    return sum(float(value) for value in found)


def _stored(pipeline: Pipeline, tmp: Path, backend: str, key: str) -> bytes | None:
    if backend == "local":
        path = tmp / "objects" / pipeline.bucket / key
        return path.read_bytes() if path.exists() else None
    client = devservices.s3_client()
    try:
        data: bytes = client.get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return data


def _upload(pipeline: Pipeline, name: str) -> tuple[str, dict[str, object]]:
    with pipeline.client() as client:
        answer = client.post("/v1/files", files={"file": (name, (SAMPLES / name).read_bytes())})
        assert answer.status_code == 202, answer.text
    file_id = answer.json()["file_id"]
    info = pipeline.wait_final(file_id)
    assert info["status"] == "available", info
    return file_id, info


def test_renditions_rendered_cached_validated_and_purged(
    pipeline: tuple[Pipeline, Path], backend: str
) -> None:
    running, tmp = pipeline
    photo, info = _upload(running, "photo-rotated.jpg")
    pdf, _ = _upload(running, "document.pdf")
    url = f"/v1/files/{photo}/render"
    params = {"w": "256", "h": "256", "fit": "cover", "format": "png"}
    key = f"{info['object_key']}.render-256x256-cover.png"
    with running.client() as client:
        before = _rendered(running)
        started = time.perf_counter()
        first = client.get(url, params=params)
        miss_ms = (time.perf_counter() - started) * 1000
        assert first.status_code == 200, first.text
        image = Image.open(io.BytesIO(first.content))
        assert (image.format, image.size, image.mode) == ("PNG", (256, 256), "RGB")
        upright = client.get(url, params={"w": "256"})
        assert Image.open(io.BytesIO(upright.content)).size == (256, 171)  # EXIF 6 applied
        assert _stored(running, tmp, backend, key) == first.content
        rendered = _rendered(running)
        assert rendered == before + 2

        started = time.perf_counter()
        second = client.get(url, params=params)
        hit_ms = (time.perf_counter() - started) * 1000
        assert second.status_code == 200 and second.headers["x-sluice-cache"] == "hit"
        assert second.content == first.content
        assert _rendered(running) == rendered, "the cache hit rendered again"
        print(f"\n[{backend}] render miss {miss_ms:.1f} ms, cache hit {hit_ms:.1f} ms")

        etag = first.headers["etag"]
        not_modified = client.get(url, params=params, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304

        assert client.get(url, params={"w": "300"}).status_code == 400
        assert client.get(f"/v1/files/{pdf}/render", params={"w": "256"}).status_code == 415
    with running.client("bob") as bob:
        assert bob.get(url, params=params).status_code == 404
    with running.client() as client:
        assert client.delete(f"/v1/files/{photo}").status_code == 202
        assert client.get(url, params=params).status_code == 404
    deadline = time.monotonic() + 60
    while _stored(running, tmp, backend, key) is not None:
        assert time.monotonic() < deadline, "the purge left the rendition behind"
        time.sleep(0.5)


def test_version_parameter_renders_that_version(
    pipeline: tuple[Pipeline, Path], backend: str
) -> None:
    running, _ = pipeline
    file_id, _ = _upload(running, "photo-rotated.jpg")  # 600x400 upright
    with running.client() as client:
        added = client.post(
            f"/v1/files/{file_id}/versions",
            files={"file": ("photo.webp", (SAMPLES / "photo.webp").read_bytes())},  # 1000x872
        )
        assert added.status_code == 202, added.text
        deadline = time.monotonic() + 120
        while client.get(f"/v1/files/{file_id}/versions/2").json().get("status") != "available":
            assert time.monotonic() < deadline, "version 2 not available"
            time.sleep(0.2)
        url = f"/v1/files/{file_id}/render"
        current = client.get(url, params={"h": "128", "format": "png"})
        first = client.get(url, params={"h": "128", "format": "png", "version": "1"})
        assert Image.open(io.BytesIO(current.content)).size == (147, 128)
        assert Image.open(io.BytesIO(first.content)).size == (192, 128)
        assert current.headers["etag"] != first.headers["etag"]
        missing = client.get(url, params={"h": "128", "version": "9"})
        assert missing.status_code == 404
