"""Fault 9: the spool's disk fills up under the gateway.

The spool is an 8 MiB tmpfs, mostly taken by a ballast file, and ``SLUICE_SPOOL_MIN_FREE_BYTES``
is 0, so only the disk itself refuses. The gateway runs alone (no stage drains the spool) while
uploads arrive until it answers 507: first with ``Content-Length``, four at a time (refused
before the body is read once one no longer fits, or by the disk when several passed that check
together), then streamed without one (the write itself fails with ``ENOSPC``). Every refusal
is ``507 insufficient_storage``, no ``.partial`` or orphan file stays, the spooled uploads are
whole. Then the stages start, drain the spool, and the same gateway process, never restarted,
takes uploads again; every accepted upload is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.checks import REPORTS, verify, wait_drained
from tests.faults.cluster import WORKERS, Cluster
from tests.faults.workload import Upload, UploadResults, mixed_uploads, upload_all

pytestmark = pytest.mark.faults

MiB = 1024 * 1024
TMPFS_BYTES = 8 * MiB
BALLAST_BYTES = 5 * MiB + 512 * 1024
BALLAST = "ballast"


@pytest.fixture
def spool_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted where the cluster's spool goes; a failing mount fails the test."""
    spool = tmp_path / "spool"
    spool.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES // MiB}m", "tmpfs", str(spool)]
    done = subprocess.run(mount, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"cannot mount a tmpfs at {spool}: {done.stderr.strip()}"
    try:
        yield spool
    finally:
        done = subprocess.run(["umount", str(spool)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"cannot unmount {spool}: {done.stderr.strip()}"


@pytest.fixture
def cluster(services: object, spool_tmpfs: Path, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, "faults_diskfull", extra_env={"SLUICE_SPOOL_MIN_FREE_BYTES": "0"})
    assert cluster.spool_dir == spool_tmpfs
    cluster.prepare()
    cluster.start("gateway")
    cluster.wait_http()
    yield cluster
    codes = cluster.stop_all()
    assert codes == dict.fromkeys(codes, 0), f"SIGTERM must drain and exit 0: {codes}"


async def _streamed(client: httpx.AsyncClient, upload: Upload) -> httpx.Response:
    """``upload`` sent in 64 KiB chunks without ``Content-Length`` (chunked transfer coding)."""
    head = (
        f'--sLuIcE\r\nContent-Disposition: form-data; name="file"; filename="{upload.name}"\r\n\r\n'
    )
    body = head.encode() + upload.data + b"\r\n--sLuIcE--\r\n"

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    return await client.post(
        "/v1/files",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=sLuIcE"},
    )


async def _send_streamed(client: httpx.AsyncClient, uploads: list[Upload]) -> UploadResults:
    results = UploadResults()
    for upload in uploads:
        answer = await _streamed(client, upload)
        if answer.status_code == 202:
            results.accepted[answer.json()["file_id"]] = upload
        else:
            results.refused.append((upload, answer.status_code, answer.text[:300]))
    return results


def _photos(count: int, seed: int) -> list[Upload]:
    """Mixed uploads without the 3.7 MB photo, which would never fit."""
    return [u for u in mixed_uploads(count * 2, seed=seed) if u.name != "large.jpg"][:count]


def test_a_full_spool_is_507_leaves_nothing_and_recovers_by_itself(cluster: Cluster) -> None:
    spool = cluster.spool_dir
    (spool / BALLAST).write_bytes(b"\0" * BALLAST_BYTES)

    async def fill() -> tuple[UploadResults, UploadResults]:
        async with cluster.client() as client:
            known = await upload_all(client, _photos(120, seed=8), concurrency=4)
            streamed = await _send_streamed(client, _photos(20, seed=9))
        return known, streamed

    known, streamed = asyncio.run(fill())
    refused = known.refused + streamed.refused
    assert known.accepted, "nothing fitted: the ballast leaves too little room"
    not_507 = [(upload.name, status, text) for upload, status, text in refused if status != 507]
    assert not_507 == [], not_507[:3]
    assert all('"code":"insufficient_storage"' in text for _, _, text in refused), refused[:3]
    before_body = [t for _, _, t in refused if "the spool has " in t]
    while_writing = [t for _, _, t in refused if "filled up during the upload" in t]
    assert len(before_body) + len(while_writing) == len(refused), refused[:3]
    assert before_body, "no upload was refused on its Content-Length"
    assert streamed.refused, "every streamed upload fitted: the disk never filled"
    assert all("filled up during the upload" in t for _, _, t in streamed.refused)

    entries = {p.name: p for p in spool.iterdir() if p.is_file()}
    partial_left = sorted(name for name in entries if name.endswith(".partial"))
    orphans = sorted(set(entries) - set(known.accepted) - set(streamed.accepted) - {BALLAST})
    assert partial_left == [], partial_left
    assert orphans == [], orphans
    # RabbitMQ stayed up: no event waits in the gateway's outbox, no half-written entry either.
    outbox = [p.name for p in spool.glob(".outbox/*") if p.name.endswith((".json", ".tmp"))]
    assert outbox == [], outbox
    for file_id, upload in {**known.accepted, **streamed.accepted}.items():
        data = entries[file_id].read_bytes()
        assert hashlib.sha256(data).hexdigest() == upload.sha256, f"{file_id} is not whole"

    # The stages drain the spool; the gateway, untouched, takes uploads again.
    for name in (*WORKERS, "purge", "fallback"):
        cluster.start(name)
    cluster.wait_ready()
    filled = UploadResults(
        accepted={**known.accepted, **streamed.accepted},
        refused=refused,
    )
    wait_drained(cluster, filled, timeout_s=180)

    async def again() -> UploadResults:
        async with cluster.client() as client:
            known = await upload_all(client, _photos(20, seed=10), concurrency=4)
            streamed = await _send_streamed(client, _photos(5, seed=11))
        return UploadResults(
            accepted={**known.accepted, **streamed.accepted},
            refused=known.refused + streamed.refused,
        )

    after = asyncio.run(again())
    recovered = not after.refused and cluster.starts["gateway"] == 1
    results = UploadResults(accepted={**filled.accepted, **after.accepted}, refused=refused)
    wait_drained(cluster, results, timeout_s=180)
    (spool / BALLAST).unlink()

    REPORTS.append(
        f"[fault spool disk full] accepted={len(filled.accepted)} refused_507={len(refused)} "
        f"(before the body: {len(before_body)}, ENOSPC while writing: {len(while_writing)}) "
        f"partial_files_left={len(partial_left)} orphans={len(orphans)} "
        f"recovered={'yes' if recovered else 'no'} accepted_after={len(after.accepted)}"
    )
    assert recovered, f"the gateway did not take uploads again: {after.refused[:3]}"
    verify(cluster, results, "spool disk full (8 MiB tmpfs), then drained")
