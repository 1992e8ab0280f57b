"""The pipeline end to end on the local storage backend, with S3 unreachable.

One ``sluice run`` process with ``SLUICE_STORAGE_BACKEND=local`` and ``S3_ENDPOINT`` pointed at
a closed port (``http://127.0.0.1:1``): every file reaching ``available`` proves no stage needs
S3. The core checks of ``test_pipeline.py`` run here on the local backend (each sample to its
final status, the right SHA-256 on disk, thumbnails, EICAR rejected and never stored), plus the
gateway's signed download URLs: served with the right type and length, 403 when forged or
expired. The rest of ``test_pipeline.py`` runs on S3 only (the suite's time: docs/storage.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import pytest
from PIL import Image

from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline

SAMPLES = ROOT / "samples"
HISTORY = ["file.received", "file.scanned", "file.stored", "file.thumbnailed", "file.committed"]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-local")


@pytest.fixture(scope="module")
def pipeline(tmp: Path) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp, "e2elocal", local_storage=True)


@pytest.fixture(scope="module")
def samples_done(pipeline: Pipeline) -> dict[str, tuple[str, dict[str, Any]]]:
    ids = {}
    with pipeline.client() as client:
        for path in sorted(SAMPLES.iterdir()):
            if path.suffix == ".md":
                continue
            answer = client.post("/v1/files", files={"file": (path.name, path.read_bytes())})
            assert answer.status_code == 202, answer.text
            ids[path.name] = answer.json()["file_id"]
    return {name: (file_id, pipeline.wait_final(file_id)) for name, file_id in ids.items()}


def on_disk(tmp: Path, pipeline: Pipeline, key: str) -> Path:
    return tmp / "objects" / pipeline.bucket / key


def test_every_sample_reaches_its_final_status_with_s3_unreachable(
    pipeline: Pipeline, samples_done: dict[str, Any]
) -> None:
    assert pipeline.env["S3_ENDPOINT"] == "http://127.0.0.1:1"
    statuses = {name: info["status"] for name, (_, info) in samples_done.items()}
    assert statuses == {
        name: "rejected" if name.startswith("eicar") else "available" for name in statuses
    }
    for name, (_, info) in samples_done.items():
        if info["status"] == "available":
            assert [row["type"] for row in info["history"]] == HISTORY, name


def test_originals_on_disk_have_the_uploaded_sha256(
    tmp: Path, pipeline: Pipeline, samples_done: dict[str, Any]
) -> None:
    for name, (file_id, info) in samples_done.items():
        if info["status"] != "available":
            continue
        local = (SAMPLES / name).read_bytes()
        (row,) = pipeline.sql(
            "SELECT bucket, object_key, sha256 FROM file_versions WHERE file_id = %s", file_id
        )
        assert row[0] == pipeline.bucket
        stored = on_disk(tmp, pipeline, row[1]).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(local).hexdigest() == row[2]
        with pipeline.client() as client:
            assert client.get(f"/v1/files/{file_id}/content").content == local


def test_thumbnails_are_on_disk_and_decode(
    tmp: Path, pipeline: Pipeline, samples_done: dict[str, Any]
) -> None:
    for name in ("photo-rotated.jpg", "photo.png", "photo.heic"):
        _, info = samples_done[name]
        assert sorted(t["size_px"] for t in info["thumbnails"]) == [256, 1024], name
        (row,) = pipeline.sql(
            "SELECT thumbnails FROM file_versions WHERE file_id = %s", samples_done[name][0]
        )
        for thumb in row[0]:
            image = Image.open(io.BytesIO(on_disk(tmp, pipeline, thumb["key"]).read_bytes()))
            assert max(image.size) <= thumb["size_px"]
            assert Image.MIME[image.format or ""] == thumb["content_type"]


def test_eicar_is_rejected_and_never_written(
    tmp: Path, pipeline: Pipeline, samples_done: dict[str, Any]
) -> None:
    file_id, info = samples_done["eicar.pdf"]
    assert "Eicar" in (info["status_reason"] or "")
    written = [p.name for p in (tmp / "objects" / pipeline.bucket).rglob("*")]
    assert written and not [name for name in written if file_id in name]


def test_signed_urls_serve_the_original_and_thumbnails(
    pipeline: Pipeline, samples_done: dict[str, Any]
) -> None:
    _, info = samples_done["photo.webp"]
    original = info["urls"]["original"]
    assert original.startswith("/v1/objects/alice/")
    answer = httpx.get(pipeline.url + original, timeout=10)  # no API key
    data = (SAMPLES / "photo.webp").read_bytes()
    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["content-type"] == "image/webp"
    assert answer.headers["content-length"] == str(len(data))
    assert answer.headers["content-disposition"].startswith("attachment; filename*=UTF-8''")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["accept-ranges"] == "bytes"
    # A byte range, as S3 serves one of a presigned URL (a resumed download, a media seek).
    etag = answer.headers["etag"]
    part = httpx.get(
        pipeline.url + original, headers={"Range": "bytes=100-199", "If-Range": etag}, timeout=10
    )
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert part.headers["content-length"] == "100"
    past = httpx.get(pipeline.url + original, headers={"Range": f"bytes={len(data)}-"}, timeout=10)
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    head = httpx.head(pipeline.url + original, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data)) and head.headers["etag"] == etag
    for thumb in info["thumbnails"]:
        answer = httpx.get(pipeline.url + thumb["url"], timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == thumb["content_type"]
        assert int(answer.headers["content-length"]) == thumb["size_bytes"]


def test_a_download_name_outside_latin_1_is_percent_encoded(pipeline: Pipeline) -> None:
    name = 'été 日本 "quoted".png'
    data = (SAMPLES / "photo.png").read_bytes()
    with pipeline.client() as client:
        answer = client.post("/v1/files", files={"file": (name, data, "image/png")})
        assert answer.status_code == 202, answer.text
    info = pipeline.wait_final(answer.json()["file_id"])
    assert info["status"] == "available", info
    download = httpx.get(pipeline.url + info["urls"]["original"], timeout=10)
    assert download.status_code == 200 and download.content == data
    disposition = download.headers["content-disposition"]  # RFC 5987: UTF-8, percent-encoded
    assert disposition == "attachment; filename*=UTF-8''" + quote(info["original_name"], safe="")


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return f"{parts.path}?{urlencode(query)}"


@pytest.mark.parametrize("forgery", ["signature", "expires", "key", "type"])
def test_a_forged_url_gets_403(
    pipeline: Pipeline, samples_done: dict[str, Any], forgery: str
) -> None:
    _, info = samples_done["photo.png"]
    url = info["urls"]["original"]
    if forgery == "signature":
        url = _with(url, signature="0" * 64)
    elif forgery == "expires":
        url = _with(url, expires=str(int(time.time()) + 10**6))
    elif forgery == "key":
        url = url.replace("/v1/objects/alice/", "/v1/objects/bob/", 1)
    else:
        url = _with(url, type="text/html")
    answer = httpx.get(pipeline.url + url, timeout=10)
    assert answer.status_code == 403
    assert json.loads(answer.text)["error"] == {
        "code": "forbidden",
        "message": "download URL refused: signature does not match",
    }


def test_an_expired_url_gets_403_saying_so(tmp: Path, pipeline: Pipeline) -> None:
    from shared.adapters.signed_urls import UrlSigner, secret_from_key_file

    signer = UrlSigner(secret_from_key_file(tmp / "objects"))  # the key file the gateway made
    expired = signer.url("alice/anything", 60, now=time.time() - 120)
    answer = httpx.get(pipeline.url + expired, timeout=10)
    assert answer.status_code == 403
    assert "URL expired at" in answer.json()["error"]["message"]
