"""Rescans end to end (docs/security.md § Rescans): a file that only a signature added later
matches is uploaded and stored; the signature is added to a clamd of the test's own (the shared
clamd is never changed: ``tests/faults/private_clamd.py``), which reloads its database; ``sluice
rescan`` then asks the scan stage to scan stored files again.

What a user checks: the infected file is ``quarantined`` with the new signature, the gateway
answers 410 for its content and gives no URL; its original and thumbnails are gone from their
keys and are under ``_quarantine/`` with the same bytes (nothing deleted silently). The clean
file stays ``available`` and records the scan in its history, and both show the scanner and
signature database versions in ``GET /v1/files/{id}``. The pipeline runs with ``S3_SSE=AES256``:
the quarantined copies are encrypted too.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared import devservices
from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline
from tests.faults.private_clamd import PrivateClamd

pytestmark = pytest.mark.e2e

NAME = "e2erescan"
SIGNATURE = "Sluice.Test.Later"
MARKER = f"sluice-later-signature-{uuid.uuid4().hex}".encode()


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateClamd]:
    private = PrivateClamd(tmp_path_factory.mktemp("rescan-clamd"))
    try:
        private.start()
        yield private
    finally:
        private.stop()
        private.close()


@pytest.fixture(scope="module")
def pipeline(
    services: object, clamd: PrivateClamd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    yield from start_pipeline(
        tmp_path_factory.mktemp("e2e-rescan"),
        NAME,
        {"SLUICE_CLAMD_PORT": str(clamd.port), "S3_SSE": "AES256"},
    )


def add_signature(clamd: PrivateClamd) -> None:
    """Add a one-line ``.ndb`` signature for :data:`MARKER` and make clamd ``RELOAD``; wait
    until it finds the marker."""
    database = clamd.config.clamd_dir / "db" / "sluice-later.ndb"
    database.write_text(f"{SIGNATURE}:0:*:{MARKER.hex()}\n", encoding="ascii")
    with socket.create_connection(("127.0.0.1", clamd.port), timeout=10) as sock:
        sock.sendall(b"nRELOAD\n")
        assert sock.recv(100).strip() == b"RELOADING"
    probe = b"x" * 100 + MARKER
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", clamd.port), timeout=10) as sock:
            sock.sendall(b"zINSTREAM\0" + len(probe).to_bytes(4, "big") + probe + b"\0\0\0\0")
            answer = sock.recv(200)
        if SIGNATURE.encode() in answer:
            return
        time.sleep(0.5)
    raise AssertionError(f"clamd did not load the new signature: {answer!r}")


def wait_status(
    pipeline: Pipeline, file_id: str, status: str, timeout_s: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with pipeline.client() as client:
        while time.monotonic() < deadline:
            info: dict[str, Any] = client.get(f"/v1/files/{file_id}").json()
            if info["status"] == status:
                return info
            time.sleep(0.3)
    raise AssertionError(f"{file_id} not {status} after {timeout_s}s: {info}")


def test_a_rescan_quarantines_a_stored_file_a_new_signature_matches(
    pipeline: Pipeline, clamd: PrivateClamd
) -> None:
    s3: Any = devservices.s3_client()
    photo = (ROOT / "samples" / "photo.png").read_bytes()
    later = photo + MARKER  # a PNG still, with bytes only the later signature knows
    files = {"later.png": later, "clean.png": photo}
    ids = {}
    with pipeline.client() as client:
        for name, data in files.items():
            answer = client.post("/v1/files", files={"file": (name, data)})
            assert answer.status_code == 202, answer.text
            ids[name] = answer.json()["file_id"]
    before = {name: pipeline.wait_final(file_id) for name, file_id in ids.items()}
    for info in before.values():
        assert info["status"] == "available"
        assert info["scanner"].startswith("ClamAV ") and info["signature_version"]
    [(key, thumbnails)] = pipeline.sql(
        "SELECT object_key, thumbnails FROM file_versions WHERE file_id = %s", ids["later.png"]
    )
    keys = [key, *(t["key"] for t in thumbnails)]
    assert len(keys) == 3
    with pipeline.client() as client:  # a rendition made from it: moved with it, too
        rendered = client.get(f"/v1/files/{ids['later.png']}/render", params={"w": 128})
    assert rendered.status_code == 200, rendered.text
    listing = s3.list_objects_v2(Bucket=pipeline.bucket, Prefix=f"{key}.render-")
    renditions = [o["Key"] for o in listing.get("Contents", [])]
    assert len(renditions) == 1
    keys += renditions
    stored = {k: s3.get_object(Bucket=pipeline.bucket, Key=k)["Body"].read() for k in keys}

    add_signature(clamd)
    done = subprocess.run(
        [sys.executable, "-m", "services", "rescan", "--owner", "alice", "--rate", "50"],
        env=pipeline.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "requested for 2 version(s)" in done.stdout

    info = wait_status(pipeline, ids["later.png"], "quarantined")
    assert SIGNATURE in info["status_reason"]
    assert info["urls"] is None and info["stored"] is False
    assert all(t["url"] is None for t in info["thumbnails"])
    assert "file.quarantined" in [event["type"] for event in info["history"]]
    with pipeline.client() as client:
        content = client.get(f"/v1/files/{ids['later.png']}/content")
        version = client.get(f"/v1/files/{ids['later.png']}/versions/1")
        version_content = client.get(f"/v1/files/{ids['later.png']}/versions/1/content")
    assert version.status_code == 200 and version.json()["urls"] is None, version.text
    assert all(t["url"] is None for t in version.json()["thumbnails"])
    assert version_content.status_code == 410, version_content.text
    assert content.status_code == 410
    assert content.json()["error"]["code"] == "quarantined"
    assert SIGNATURE in content.json()["error"]["message"]
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=pipeline.bucket).get("Contents", [])}
    for k in keys:
        assert k not in listed  # never served from its key again
        quarantined = s3.get_object(Bucket=pipeline.bucket, Key=f"_quarantine/{k}")
        assert quarantined.get("ServerSideEncryption") == "AES256"  # the copy asked for it too
        moved = quarantined["Body"].read()
        assert hashlib.sha256(moved).digest() == hashlib.sha256(stored[k]).digest()
    assert hashlib.sha256(stored[key]).digest() == hashlib.sha256(later).digest()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        history = [
            row[0]
            for row in pipeline.sql(
                "SELECT event_type FROM file_events WHERE file_id = %s", ids["clean.png"]
            )
        ]
        if "file.rescanned" in history:
            break
        time.sleep(0.3)
    assert "file.rescanned" in history
    with pipeline.client() as client:
        clean = client.get(f"/v1/files/{ids['clean.png']}").json()
        assert clean["status"] == "available" and clean["urls"] is not None
        assert client.get(f"/v1/files/{ids['clean.png']}/content").content == photo

    # Quarantined objects stay until a person removes them: the owner deleting the file is one.
    with pipeline.client() as client:
        assert client.delete(f"/v1/files/{ids['later.png']}").status_code == 202
    owner_prefix = f"_quarantine/{key.split('/', 1)[0]}/{ids['later.png']}-"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = s3.list_objects_v2(Bucket=pipeline.bucket, Prefix=owner_prefix).get("Contents", [])
        if not left:
            break
        time.sleep(0.3)
    assert left == [], [o["Key"] for o in left]
