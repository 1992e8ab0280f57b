"""Fault 4: clamd stopped. Scans retry with backoff, then dead-letter; once clamd is back, the
dead letters are replayed (``sluice dlq replay scan``) and every file is committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.checks import queue_depths, verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.private_clamd import PrivateClamd
from tests.faults.workload import UploadResults, mixed_uploads, upload_all

pytestmark = pytest.mark.faults


@pytest.fixture
def clamd(tmp_path: Path) -> Iterator[PrivateClamd]:
    clamd = PrivateClamd(tmp_path / "clamd")
    try:
        clamd.start()
        yield clamd
    finally:
        clamd.stop()
        clamd.close()


@pytest.fixture
def cluster(services: object, clamd: PrivateClamd, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path,
        "faults_clamd",
        extra_env={"SLUICE_CLAMD_PORT": str(clamd.port), "SLUICE_CLAMD_TIMEOUT_S": "5"},
    )
    cluster.prepare()
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def _upload(cluster: Cluster, count: int, seed: int) -> UploadResults:
    async def send() -> UploadResults:
        async with cluster.client() as client:
            return await upload_all(client, mixed_uploads(count, seed=seed))

    return asyncio.run(send())


def test_scans_dead_letter_while_clamd_is_down_and_replay_commits_them(
    cluster: Cluster, clamd: PrivateClamd
) -> None:
    before = _upload(cluster, 30, seed=41)
    wait_drained(cluster, before)

    clamd.stop()
    during = _upload(cluster, 30, seed=42)
    assert len(during.accepted) == 30, during.refused[:3]
    deadline = time.monotonic() + 120
    dlq = f"{cluster.prefix}.scan.dlq"
    while queue_depths(cluster)[dlq] < len(during.accepted):
        assert time.monotonic() < deadline, f"scan dead letters: {queue_depths(cluster)}"
        time.sleep(0.2)
    statuses = cluster.sql(
        "SELECT DISTINCT status FROM files WHERE file_id = ANY(%s::uuid[])", list(during.accepted)
    )
    assert statuses == [("received",)], "nothing may pass the scan while clamd is down"
    retried = cluster.log_tail("scan", 200_000).count('"outcome": "retry"')
    assert retried >= 2 * len(during.accepted), "each scan is retried before it dead-letters"

    clamd.start()
    cluster.cli("dlq", "replay", "scan")
    results = UploadResults(accepted={**before.accepted, **during.accepted})
    wait_drained(cluster, results)
    report = verify(cluster, results, "clamd down, then replayed")
    assert report.duplicates == 0
