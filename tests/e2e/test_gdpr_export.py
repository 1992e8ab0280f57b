"""``sluice gdpr export --owner X --out FILE.zip`` against the real pipeline, on both storage
backends (docs/gdpr.md).

The zip round-trips: each file in it hashes to the SHA-256 of the sample that was uploaded,
and ``metadata.json`` holds every file of the owner (none of another owner's) with its
metadata, versions and history. Memory stays flat: the export of a 200 MiB original (put in
place of a committed one's bytes, its recorded size and SHA-256 updated) peaks within a few MiB
of the export of small files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import devservices
from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline

SAMPLES = ROOT / "samples"
NAMES = ("photo-rotated.jpg", "document.pdf", "photo.heic")
BIG_BYTES = 200 * 1024 * 1024

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["s3", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Path:
    return tmp_path_factory.mktemp(f"e2e-export-{backend}")


@pytest.fixture(scope="module")
def pipeline(tmp: Path, backend: str) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp, f"e2eexp{backend}", local_storage=backend == "local")


@pytest.fixture(scope="module")
def uploaded(pipeline: Pipeline) -> dict[str, str]:
    ids = {}
    for owner, names in (("alice", NAMES), ("bob", NAMES[:1])):
        with pipeline.client(owner) as client:
            for name in names:
                answer = client.post(
                    "/v1/files",
                    files={"file": (name, (SAMPLES / name).read_bytes())},
                    data={"metadata": json.dumps({"album": f"{owner}-album"})},
                )
                assert answer.status_code == 202, answer.text
                ids[f"{owner}/{name}"] = answer.json()["file_id"]
    for key, file_id in ids.items():
        assert pipeline.wait_final(file_id, key.split("/")[0])["status"] == "available"
    return ids


def export(pipeline: Pipeline, out: Path) -> tuple[dict[str, object], int]:
    """Run ``sluice gdpr export`` in a fresh interpreter; its metadata.json and peak RSS (KiB)."""
    script = (
        "import resource, sys\n"
        "from services.cli import app\n"
        f"sys.argv = ['sluice', 'gdpr', 'export', '--owner', 'alice', '--out', {str(out)!r}]\n"
        "try:\n    app()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=pipeline.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rss = int(done.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    with zipfile.ZipFile(out) as archive:
        document: dict[str, object] = json.loads(archive.read("metadata.json"))
    return document, rss


def member_sha256(out: Path, name: str) -> str:
    digest = hashlib.sha256()
    with zipfile.ZipFile(out) as archive, archive.open(name) as member:
        while chunk := member.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def test_export_round_trips(pipeline: Pipeline, uploaded: dict[str, str], tmp: Path) -> None:
    out = tmp / "alice.zip"
    document, _ = export(pipeline, out)
    files = {f["file_id"]: f for f in document["files"]}  # type: ignore[attr-defined]
    assert set(files) == {uploaded[f"alice/{name}"] for name in NAMES}
    assert uploaded["bob/photo-rotated.jpg"] not in files
    for name in NAMES:
        entry = files[uploaded[f"alice/{name}"]]
        assert entry["original_name"] == name
        assert entry["metadata"] == {"album": "alice-album"}
        assert {e["event_type"] for e in entry["history"]} == {
            "file.received",
            "file.scanned",
            "file.stored",
            "file.thumbnailed",
            "file.committed",
        }
        (version,) = entry["versions"]
        local = hashlib.sha256((SAMPLES / name).read_bytes()).hexdigest()
        assert version["sha256"] == local and version["sha256_matches"] is True
        assert member_sha256(out, version["path"]) == local
    assert not (tmp / "alice.zip.partial").exists()


def test_export_memory_stays_flat_for_a_large_file(
    pipeline: Pipeline, uploaded: dict[str, str], tmp: Path, backend: str
) -> None:
    _, small_rss = export(pipeline, tmp / "small.zip")
    file_id = uploaded["alice/document.pdf"]
    ((key,),) = pipeline.sql("SELECT object_key FROM file_versions WHERE file_id = %s", file_id)
    big = tmp / "big.bin"
    digest = hashlib.sha256()
    with big.open("wb") as handle:
        for n in range(BIG_BYTES // (1024 * 1024)):
            chunk = os.urandom(1024) * 1024 if n % 7 == 0 else bytes([n % 256]) * (1024 * 1024)
            digest.update(chunk)
            handle.write(chunk)
    if backend == "local":
        os.replace(big, tmp / "objects" / pipeline.bucket / key)
    else:
        with big.open("rb") as body:
            devservices.s3_client().put_object(Bucket=pipeline.bucket, Key=key, Body=body)
        big.unlink()
    pipeline.sql(
        "UPDATE file_versions SET size_bytes = %s, sha256 = %s WHERE file_id = %s RETURNING 1",
        BIG_BYTES,
        digest.hexdigest(),
        file_id,
    )
    out = tmp / "large.zip"
    document, large_rss = export(pipeline, out)
    (entry,) = [f for f in document["files"] if f["file_id"] == file_id]  # type: ignore[attr-defined]
    assert entry["versions"][0]["sha256_matches"] is True
    assert member_sha256(out, entry["versions"][0]["path"]) == digest.hexdigest()
    grown_mib = (large_rss - small_rss) / 1024
    print(
        f"export peak RSS: small {small_rss / 1024:.0f} MiB, with 200 MiB file "
        f"{large_rss / 1024:.0f} MiB (+{grown_mib:.1f} MiB)"
    )
    assert grown_mib < 32, (small_rss, large_rss)
