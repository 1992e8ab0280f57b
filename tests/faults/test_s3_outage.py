"""Issue: S3 outage → Base64 fallback in PostgreSQL → migration back to S3.

A private SeaweedFS (``tests/faults/private_seaweedfs.py``) is killed during a run of 300
uploads of four sizes (about 10 KB, 200 KB, 3 MB and 9.5 MB) and stays down far longer than
the store stage's retry budget. Store messages that run out of retries go to the fallback
worker: files up to the fallback cap (5 MiB here) are kept Base64 in PostgreSQL and served by
the gateway byte for byte while S3 is down; bigger ones are announced ``deferred`` and wait in
the store dead-letter queue. Then S3 comes back; the fallback worker migrates its rows and is
killed with SIGKILL in the middle of it and started again; ops replay the store dead letters
(the deferred files). Thumbnails that were due when S3 went away are not dead-lettered: the
thumbnail stage's circuit breaker (``shared.breaker``) opens when S3 does not answer
``HeadBucket``, its messages wait in its queue, and it resumes by itself once S3 is back. Every
file must end ``available`` with its object's SHA-256 equal to the upload's, one version row,
one ``file.committed``, and the fallback table empty.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import httpx
import pytest
from PIL import Image

from shared.topology import Topology
from tests.faults.checks import REPORTS, queue_depths, verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.private_seaweedfs import PrivateSeaweedFS, private_seaweedfs
from tests.faults.workload import Upload, UploadResults, _payloads, upload_all

pytestmark = pytest.mark.faults

MiB = 1024 * 1024
FALLBACK_CAP = 5 * MiB


@cache
def _huge_jpeg() -> Upload:
    """A noisy JPEG of 9-10 MB: big enough to be over the test's fallback cap."""
    side = 2600
    while True:
        noise = Image.effect_noise((side, side * 3 // 4), 90).convert("RGB")
        out = io.BytesIO()
        noise.save(out, "JPEG", quality=98)
        if out.tell() >= 9 * MiB:
            break
        side += 300
    assert out.tell() <= 10 * MiB, out.tell()
    return Upload("huge.jpg", out.getvalue(), "available", True)


def s3_outage_uploads(count: int) -> list[Upload]:
    """``count`` uploads of four sizes, interleaved: 10 KB / 200 KB / 3 MB / 9.5 MB images."""
    by_name = {upload.name: upload for upload in _payloads()}
    kinds = [by_name["photo-120.jpg"], by_name["photo-1200.jpg"], by_name["large.jpg"]]
    sizes = sorted(len(u.data) for u in kinds)
    assert sizes[0] < 50_000 < sizes[1] < 1 * MiB < sizes[2] < FALLBACK_CAP, sizes
    plan = [*kinds * 6, _huge_jpeg()]  # 19 per round: 6 of each small kind, one huge
    return [plan[i % len(plan)] for i in range(count)]


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[PrivateSeaweedFS]:
    with private_seaweedfs(tmp_path / "seaweedfs") as instance:
        yield instance


@pytest.fixture
def cluster(services: object, s3: PrivateSeaweedFS, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path,
        "faults_s3",
        s3=s3,
        extra_env={
            "SLUICE_AMQP_RETRY_BASE_DELAY_S": "0.5",
            "SLUICE_AMQP_RETRY_MAX_DELAY_S": "2",
            "S3_TIMEOUT_S": "5",
            "SLUICE_FALLBACK_MAX_BYTES": str(FALLBACK_CAP),
            "SLUICE_FALLBACK_PROBE_INTERVAL_S": "1",
            "SLUICE_FALLBACK_BATCH_SIZE": "5",
        },
    )
    cluster.prepare()
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def _status_counts(cluster: Cluster, ids: list[str]) -> dict[str, int]:
    rows = cluster.sql(
        "SELECT status, count(*) FROM files WHERE file_id = ANY(%s::uuid[]) GROUP BY status", ids
    )
    return {status: int(n) for status, n in rows}


def _wait(
    condition: object, timeout_s: float, what: str, cluster: Cluster, poll_s: float = 0.3
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        for name, process in cluster.processes.items():
            assert process.poll() is None, f"{name} died: {cluster.log_tail(name)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


def test_s3_outage_falls_back_serves_and_migrates_back(
    cluster: Cluster, s3: PrivateSeaweedFS
) -> None:
    uploads = s3_outage_uploads(300)
    huge = uploads[18]
    assert len(huge.data) > FALLBACK_CAP

    async def scenario() -> UploadResults:
        async with cluster.client() as client:
            sending = asyncio.create_task(upload_all(client, uploads, concurrency=6))
            await asyncio.sleep(3)
            await asyncio.to_thread(s3.stop)
            return await sending

    results = asyncio.run(scenario())
    assert not results.refused, results.refused[:3]
    ids = list(results.accepted)

    # S3 stays down until every upload has settled: stored before the outage (its thumbnails
    # waiting in the thumbnail queue behind the open breaker), kept in the fallback, or deferred
    # to the store dead-letter queue.
    def settled() -> bool:
        counts = _status_counts(cluster, ids)
        parked = ("fallback", "deferred", "available", "stored")
        if sum(counts.get(s, 0) for s in parked) != len(ids):
            return False
        depths = queue_depths(cluster)
        return not any(depths[q] for q in busy)

    topology = Topology(prefix=cluster.prefix)
    busy = [
        name
        for stage in ("store", "fallback")
        for name in (topology.queue(stage), topology.retry_queue(stage))
    ]
    _wait(settled, 240, "every upload to settle while S3 is down", cluster)
    time.sleep(1)  # a message may sit unacknowledged in a consumer; settle again
    _wait(settled, 60, "every upload to settle while S3 is down", cluster)
    during = _status_counts(cluster, ids)
    in_fallback = int(cluster.sql("SELECT count(*) FROM fallback_blobs")[0][0])
    # The thumbnail stage waits for S3 rather than dead-lettering.
    thumbnail_readyz = httpx.get(
        f"http://127.0.0.1:{cluster.health_ports['thumbnail']}/readyz", timeout=5
    )
    if during.get("stored", 0):
        assert thumbnail_readyz.status_code == 503, thumbnail_readyz.text
        assert thumbnail_readyz.json()["breakers"]["thumbnail"]["dependency"] == "s3"
    thumbnail_dlq = topology.dead_letter_queue("thumbnail")
    assert queue_depths(cluster)[thumbnail_dlq] == 0
    assert during.get("fallback", 0) == in_fallback > 0, during
    assert during.get("deferred", 0) > 0, during

    # The deferred files wait in the store dead-letter queue, sent there by the fallback worker
    # itself (not by the delivery limit after a redelivery loop), announced once each.
    letters = json.loads(cluster.cli("dlq", "list", "store", "--json"))
    assert len(letters) == during["deferred"]
    assert {(d["stage"], d["error_type"]) for d in letters} == {("store", "FallbackRefused")}
    assert all(d["delivery_count"] == 0 for d in letters), letters[:2]
    deferred_events = cluster.sql(
        "SELECT count(*) FROM file_events WHERE event_type = 'file.deferred'"
    )[0][0]
    assert deferred_events == during["deferred"]

    # The fallback worker's /metrics shows what sits in the fallback (refreshed every probe).
    def gauge(name: str) -> float | None:
        port = cluster.health_ports["fallback"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    _wait(lambda: gauge("sluice_fallback_versions") == in_fallback, 30, "the gauge", cluster)
    fallback_bytes = int(cluster.sql("SELECT sum(size_bytes) FROM fallback_blobs")[0][0])
    assert gauge("sluice_fallback_bytes") == fallback_bytes
    assert (gauge("sluice_fallback_table_bytes") or 0) > 0
    assert gauge("sluice_corrupted_versions") == 0

    # While S3 is down, a fallback file is served from PostgreSQL byte for byte.
    fallback_id = str(cluster.sql("SELECT file_id FROM fallback_blobs LIMIT 1")[0][0])
    upload = results.accepted[fallback_id]

    async def download() -> tuple[int, bytes, dict[str, str], dict[str, object]]:
        async with cluster.client() as client:
            content = await client.get(f"/v1/files/{fallback_id}/content")
            status = (await client.get(f"/v1/files/{fallback_id}")).json()
            return content.status_code, content.content, dict(content.headers), status

    code, body, headers, status = asyncio.run(download())
    assert code == 200, body[:300]
    assert hashlib.sha256(body).hexdigest() == upload.sha256
    assert headers["x-sluice-sha256"] == upload.sha256
    assert headers["content-length"] == str(len(upload.data))
    assert (status["status"], status["storage"], status["stored"]) == (
        "fallback",
        "postgresql",
        False,
    )
    assert "StorageUnavailable" in str(status["status_reason"])

    # S3 comes back; the fallback worker is killed mid-migration and started again.
    s3.start()
    _wait(
        lambda: 0 < int(cluster.sql("SELECT count(*) FROM fallback_blobs")[0][0]) < in_fallback,
        120,
        "the migration to start",
        cluster,
        poll_s=0.02,
    )
    cluster.kill("fallback")
    left_at_kill = int(cluster.sql("SELECT count(*) FROM fallback_blobs")[0][0])
    cluster.start("fallback")
    cluster.wait_ready(("fallback",))
    _wait(
        lambda: int(cluster.sql("SELECT count(*) FROM fallback_blobs")[0][0]) == 0,
        240,
        "the fallback table to empty",
        cluster,
    )

    # Ops replay what S3's absence dead-lettered: the deferred originals only.
    assert queue_depths(cluster)[thumbnail_dlq] == 0
    replayed = cluster.cli("dlq", "replay", "store")
    wait_drained(cluster, results, timeout_s=300)
    report = verify(cluster, results, "S3 stopped during the run, then started")
    assert report.available == len(ids), (report, replayed)
    assert report.duplicates == 0

    stored_twice = cluster.sql(
        "SELECT file_id, count(*) FROM file_events WHERE event_type = 'file.stored'"
        " GROUP BY file_id HAVING count(*) > 1"
    )
    assert not stored_twice
    REPORTS.append(
        f"[fault s3-outage] fallback={in_fallback} deferred={during.get('deferred', 0)} "
        f"stored_before={during.get('available', 0) + during.get('stored', 0)} "
        f"thumbnails_waiting={during.get('stored', 0)} thumbnail_dead_letters=0 "
        f"fallback_rows_at_kill={left_at_kill} "
        f"available={report.available}/{len(ids)}"
    )
