"""Versions and a copy end to end on the local storage backend (``SLUICE_STORAGE_BACKEND=local``,
S3 unreachable): each version and the copy are on disk under their own keys with their SHA-256."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline
from tests.e2e.test_versions import post_version, wait_version

SAMPLES = ROOT / "samples"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-versions-local")


@pytest.fixture(scope="module")
def pipeline(tmp: Path) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp, "e2eversionslocal", local_storage=True)


def test_versions_and_a_copy_on_the_local_backend(tmp: Path, pipeline: Pipeline) -> None:
    first, second = SAMPLES / "photo.png", SAMPLES / "photo-rotated.jpg"
    with pipeline.client() as client:
        posted = client.post("/v1/files", files={"file": (first.name, first.read_bytes())})
        file_id = posted.json()["file_id"]
    pipeline.wait_final(file_id)
    assert post_version(pipeline, file_id, second).json()["version_number"] == 2
    for n, path in ((1, first), (2, second)):
        version = wait_version(pipeline, file_id, n)
        assert version["status"] == "available"
        on_disk = tmp / "objects" / pipeline.bucket / version["object_key"]
        assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == version["sha256"]
        assert version["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with pipeline.client() as client:
        copy = client.post(f"/v1/files/{file_id}/copy")
        assert copy.status_code == 202, copy.text
    done = pipeline.wait_final(copy.json()["file_id"])
    assert done["status"] == "available"
    on_disk = tmp / "objects" / pipeline.bucket / copy.json()["object_key"]
    assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == done["sha256"]
    assert done["sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()
