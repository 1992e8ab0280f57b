"""S3 outage with the S3 spool (``SLUICE_SPOOL_BACKEND=s3``): uploads are refused, files in
flight wait, nothing is lost nor dead-lettered.

A private SeaweedFS (``tests/faults/private_seaweedfs.py``) holds both the quarantine bucket and
the final bucket. It is killed once a quarter of a run of mixed uploads is accepted, and stays
down far longer than the stages' retry budget. While it is down:

- every new upload is answered 503 ``storage_unavailable`` with ``Retry-After`` (its
  ``PutObject`` or multipart upload into the quarantine bucket fails, and nothing is
  published): refused, never half-accepted;
- files already accepted wait: their bytes are in the quarantine bucket, so the Base64 fallback
  has nothing to keep (``fallback_blobs`` stays empty); the scan, store and thumbnail stages'
  circuit breakers open on S3 and hold their messages in their queues; no dead-letter queue
  receives anything.

Then S3 comes back: every accepted file must end in its final state (available, or rejected
for the EICAR file) with its object's SHA-256 equal to the upload's, one version, one
``file.committed``; the quarantine bucket is emptied by the commit stage, and ``sluice spool
clean`` aborts the multipart uploads that S3's death left unfinished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.topology import STAGES, Topology
from tests.faults.checks import REPORTS, final_count, queue_depths, verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.private_seaweedfs import PrivateSeaweedFS, private_seaweedfs
from tests.faults.workload import UploadResults, mixed_uploads, upload_all

pytestmark = pytest.mark.faults

OUTAGE_S = 25


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[PrivateSeaweedFS]:
    with private_seaweedfs(tmp_path / "seaweedfs") as instance:
        yield instance


@pytest.fixture
def cluster(services: object, s3: PrivateSeaweedFS, tmp_path: Path) -> Iterator[Cluster]:
    quarantine = "sluice-faults-q-spool"
    cluster = Cluster(
        tmp_path,
        "faults_quarantine",
        s3=s3,
        extra_env={
            "SLUICE_SPOOL_BACKEND": "s3",
            "SLUICE_SPOOL_S3_BUCKET": quarantine,
            "SLUICE_AMQP_RETRY_BASE_DELAY_S": "0.5",
            "SLUICE_AMQP_RETRY_MAX_DELAY_S": "2",
            "S3_TIMEOUT_S": "5",
            "SLUICE_BREAKER_PROBE_TIMEOUT_S": "2",
        },
    )
    cluster.prepare()
    s3.ensure_bucket(quarantine)
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def _breakers(cluster: Cluster) -> dict[str, str | None]:
    """Each worker's breaker dependency while it is not closed (``/readyz``)."""
    found: dict[str, str | None] = {}
    for name in ("scan", "store", "thumbnail", "commit", "fallback"):
        try:
            body = httpx.get(
                f"http://127.0.0.1:{cluster.health_ports[name]}/readyz", timeout=5
            ).json()
        except httpx.HTTPError:
            continue
        for stage, breaker in body.get("breakers", {}).items():
            if breaker.get("state") != "closed":
                found[stage] = breaker.get("dependency")
    return found


def test_s3_outage_with_the_s3_spool_refuses_uploads_and_loses_nothing(
    cluster: Cluster, s3: PrivateSeaweedFS
) -> None:
    uploads = mixed_uploads(150, seed=11)

    async def scenario() -> UploadResults:
        async with cluster.client() as client:
            quarter = asyncio.Event()
            signal = (len(uploads) // 4, quarter)
            sending = asyncio.create_task(upload_all(client, uploads, 6, signal))
            await asyncio.wait_for(quarter.wait(), 120)
            await asyncio.to_thread(s3.stop)
            return await sending

    results = asyncio.run(scenario())
    ids = list(results.accepted)
    assert ids, "nothing was accepted before S3 stopped"
    assert results.refused, "nothing was refused while S3 was down"
    statuses = {status for _, status, _ in results.refused}
    assert statuses == {503}, results.refused[:3]
    assert all("storage_unavailable" in text for _, _, text in results.refused)

    # S3 stays down well past every retry budget; nothing may be dead-lettered meanwhile.
    topology = Topology(prefix=cluster.prefix)
    dead_letter_queues = [topology.dead_letter_queue(stage) for stage in STAGES]
    deadline = time.monotonic() + OUTAGE_S
    waiting_for_s3: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            assert process.poll() is None, f"{name} died: {cluster.log_tail(name)}"
        depths = queue_depths(cluster)
        assert all(depths[q] == 0 for q in dead_letter_queues), depths
        waiting_for_s3.update(_breakers(cluster))
        time.sleep(1)
    final_during = final_count(cluster, ids)
    in_fallback = int(cluster.sql("SELECT count(*) FROM fallback_blobs")[0][0])
    assert in_fallback == 0
    if final_during < len(ids):
        assert set(waiting_for_s3.values()) == {"s3"}, waiting_for_s3

    s3.start()
    wait_drained(cluster, results, timeout_s=300)
    report = verify(cluster, results, "S3 (and its quarantine bucket) stopped, then started")
    lost = len(ids) - report.available - report.rejected
    assert lost == 0 and report.duplicates == 0 and report.dead_lettered == 0, report

    # The commit stage emptied the quarantine of committed files, but for removals S3 did not
    # answer (a file committed during the outage); those, and the multipart uploads whose abort
    # S3 never answered, are for `sluice spool clean`.
    client = s3.client()
    bucket = "sluice-faults-q-spool"
    leftover = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    unfinished = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    cleaned = cluster.cli("spool", "clean", "--older-than", "0s")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], cleaned
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, cleaned

    REPORTS.append(
        f"[fault quarantine-outage] accepted={report.accepted} refused={report.refused} "
        f"final={report.available + report.rejected} lost={lost} "
        f"duplicated={report.duplicates} dead_lettered={report.dead_lettered} "
        f"not_final_during_outage={len(ids) - final_during} "
        f"breakers_opened={','.join(sorted(waiting_for_s3)) or 'none'} "
        f"fallback_rows=0 quarantine_leftovers_cleaned={len(leftover)} "
        f"unfinished_multipart_uploads_cleaned={len(unfinished)}"
    )
