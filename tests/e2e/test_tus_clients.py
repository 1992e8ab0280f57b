"""Real tus clients against the real pipeline (``python -m services run``) with the S3 spool:
tuspy (Python) and tus-js-client (Node, ``web/package-lock.json``), each sending a 60 MB file in
5 MB chunks, cut at about half way and resumed from the server's offset, then followed to
``available`` with the right SHA-256 in the bucket; a wrong checksum (460), termination, and
another owner's key (404) with each client.

The server counts the bytes of every PATCH body it receives (``sluice_tus_received_bytes_total``
on the gateway's metrics port): the server keeps what a cut PATCH brought (tus 1.0: partially
transmitted PATCH requests are stored), so a resume from its offset sends none of it again and
the count ends at the file's size exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from shared import devservices
from tests.e2e.pipeline import ROOT, Pipeline, empty_bucket, start_pipeline
from tests.integration.gateway.support import jpeg

pytestmark = pytest.mark.e2e

NAME = "e2etus"
QUARANTINE = "sluice-e2e-tus-quarantine"
MB = 1_000_000
SIZE = 60 * MB
CHUNK = 5 * MB
NODE_CLIENT = Path(__file__).with_name("tus_client.cjs")


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    devservices.up(buckets=[QUARANTINE])
    empty_bucket(QUARANTINE)
    yield from start_pipeline(
        tmp_path_factory.mktemp("e2e-tus"),
        NAME,
        {
            "SLUICE_SPOOL_BACKEND": "s3",
            "SLUICE_SPOOL_S3_BUCKET": QUARANTINE,
            "SLUICE_GATEWAY_MAX_IMAGE_BYTES": str(64 * 1024 * 1024),
        },
    )


def received_bytes(pipeline: Pipeline) -> float:
    text = httpx.get(f"{pipeline.metrics_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("sluice_tus_received_bytes_total "):
            return float(line.split()[1])
    return 0.0


def bucket_sha256(pipeline: Pipeline, info: dict[str, Any]) -> str:
    s3: Any = devservices.s3_client()
    rows = pipeline.sql("SELECT object_key FROM file_versions WHERE file_id = %s", info["file_id"])
    body = s3.get_object(Bucket=pipeline.bucket, Key=rows[0][0])["Body"].read()
    return hashlib.sha256(body).hexdigest()


def cut_patch(url: str, key: str, offset: int, data: bytes) -> None:
    """A PATCH whose connection is killed after ``len(data)`` bytes of its announced body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        head = (
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
            f"Content-Length: {CHUNK}\r\n\r\n"
        )
        sock.sendall(head.encode() + data)
        time.sleep(0.5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def settled_offset(url: str, key: str, timeout_s: float = 10.0) -> int:
    """The upload's ``Upload-Offset`` once two HEADs 0.2 s apart agree: a cut PATCH's bytes
    are kept when the server has seen the connection go, a moment after the client did."""
    headers = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        offset = int(httpx.head(url, headers=headers).headers["upload-offset"])
        if offset == last:
            return offset
        last = offset
        time.sleep(0.2)
    raise AssertionError(f"the offset of {url} kept moving for {timeout_s} s")


def test_tuspy(pipeline: Pipeline) -> None:
    data = jpeg(SIZE)
    endpoint = f"{pipeline.url}/v1/uploads/"
    alice = tus_client.TusClient(
        endpoint, headers={"Authorization": f"Bearer {pipeline.keys['alice']}"}
    )
    before = received_bytes(pipeline)
    started = time.perf_counter()
    first = alice.uploader(
        file_stream=io.BytesIO(data),
        chunk_size=CHUNK,
        metadata={"filename": "big.jpg", "kind": "e2e"},
        upload_checksum=True,
    )
    while first.offset < SIZE // 2:
        first.upload_chunk()
    kept = first.offset
    cut_patch(first.url, pipeline.keys["alice"], kept, data[kept : kept + CHUNK // 2])
    cut_at = settled_offset(first.url, pipeline.keys["alice"])
    assert kept < cut_at <= kept + CHUNK // 2  # what the cut PATCH brought was kept
    resumed = alice.uploader(
        file_stream=io.BytesIO(data),
        url=first.url,
        chunk_size=CHUNK,
        upload_checksum=True,
    )
    assert resumed.offset == cut_at  # it goes on from the server's offset
    resumed.upload()
    elapsed = time.perf_counter() - started
    assert resumed.offset == SIZE
    extra = received_bytes(pipeline) - before - SIZE
    assert extra == 0  # no byte the server had received was sent again
    head = httpx.head(
        first.url,
        headers={"Authorization": f"Bearer {pipeline.keys['alice']}", "Tus-Resumable": "1.0.0"},
    )
    file_id = head.headers["sluice-file-id"]
    print(f"tuspy: {SIZE / MB:.0f} MB in {elapsed:.1f} s ({SIZE / MB / elapsed:.1f} MB/s)")
    info = pipeline.wait_final(file_id, timeout_s=300)
    assert info["status"] == "available", info
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert bucket_sha256(pipeline, info) == info["sha256"]

    # Another owner's key: 404.
    bob = tus_client.TusClient(
        endpoint, headers={"Authorization": f"Bearer {pipeline.keys['bob']}"}
    )
    small = jpeg(200_000)
    mine = alice.uploader(
        file_stream=io.BytesIO(small),
        chunk_size=CHUNK,
        metadata={"filename": "small.jpg"},
    )
    mine.url = mine.create_url()  # tus creation, no bytes yet
    with pytest.raises(TusCommunicationError) as lost:
        bob.uploader(file_stream=io.BytesIO(small), url=mine.url, chunk_size=CHUNK).get_offset()
    assert lost.value.status_code == 404
    # A wrong checksum: 460, nothing kept.
    wrong = tus_client.TusClient(
        endpoint,
        headers={
            "Authorization": f"Bearer {pipeline.keys['alice']}",
            "Upload-Checksum": "sha256 " + "A" * 43 + "=",
        },
    )
    bad = wrong.uploader(file_stream=io.BytesIO(small), url=mine.url, chunk_size=CHUNK)
    with pytest.raises(TusCommunicationError) as mismatch:
        bad.upload_chunk()
    assert mismatch.value.status_code == 460
    assert mine.get_offset() == 0
    # Termination (tuspy has no DELETE of its own): then the upload is gone.
    gone = httpx.delete(
        mine.url,
        headers={"Authorization": f"Bearer {pipeline.keys['alice']}", "Tus-Resumable": "1.0.0"},
    )
    assert gone.status_code == 204
    with pytest.raises(TusCommunicationError) as after:
        mine.get_offset()
    assert after.value.status_code == 404


def node(*args: str) -> dict[str, Any]:
    answer = subprocess.run(
        ["node", str(NODE_CLIENT), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert answer.returncode == 0, answer.stderr
    lines = [line for line in answer.stdout.splitlines() if line.startswith("{")]
    assert lines, answer.stdout + answer.stderr
    result: dict[str, Any] = json.loads(lines[0])
    return result


def test_tus_js_client(pipeline: Pipeline, tmp_path: Path) -> None:
    assert shutil.which("node"), "node is needed (Node 20): scripts/bootstrap.sh installs web/"
    assert (ROOT / "web" / "node_modules" / "tus-js-client").is_dir(), "run scripts/bootstrap.sh"
    data = jpeg(SIZE)
    path = tmp_path / "big.jpg"
    path.write_bytes(data)
    endpoint, key = f"{pipeline.url}/v1/uploads/", pipeline.keys["alice"]
    before = received_bytes(pipeline)
    started = time.perf_counter()
    cut = node("upload", endpoint, key, str(path), "big.jpg", str(CHUNK), str(SIZE // 2))
    assert cut.get("aborted"), cut
    url = cut["url"]
    kept = settled_offset(url, key)
    assert SIZE // 2 - CHUNK <= kept <= SIZE // 2 + CHUNK
    done = node("resume", url, key, str(path), str(CHUNK))
    elapsed = time.perf_counter() - started
    assert done["ok"], done
    assert kept <= done["firstProgress"] < kept + CHUNK  # it went on from the server's offset
    extra = received_bytes(pipeline) - before - SIZE
    assert extra == 0  # no byte the server had received was sent again
    print(f"tus-js-client: {SIZE / MB:.0f} MB in {elapsed:.1f} s ({SIZE / MB / elapsed:.1f} MB/s)")
    file_id = done["fileId"]
    info = pipeline.wait_final(file_id, timeout_s=300)
    assert info["status"] == "available", info
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert bucket_sha256(pipeline, info) == info["sha256"]

    small = tmp_path / "small.jpg"
    small.write_bytes(jpeg(200_000))
    # overridePatchMethod: every PATCH goes as a POST with X-HTTP-Method-Override (tus 1.0).
    posted = node("override", endpoint, key, str(small), "small.jpg", str(64 * 1024))
    assert posted["ok"], posted
    assert posted["methods"] == ["POST"], posted
    posted_info = pipeline.wait_final(posted["fileId"], timeout_s=120)
    assert posted_info["status"] == "available", posted_info
    assert posted_info["sha256"] == hashlib.sha256(small.read_bytes()).hexdigest()

    bad = node("badsum", endpoint, key, str(small), "small.jpg", str(CHUNK))
    assert not bad["ok"] and bad["status"] == 460, bad
    other = node("head", bad["url"], pipeline.keys["bob"], str(small))
    assert not other["ok"] and (other["status"] == 404 or "404" in other["error"]), other
    ended = node("terminate", bad["url"], key)
    assert ended["ok"], ended
    gone = httpx.head(
        bad["url"], headers={"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    )
    assert gone.status_code == 404
    assert os.path.getsize(path) == SIZE
