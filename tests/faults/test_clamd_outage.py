"""Fault 4: clamd stopped during 200 uploads, then started: every file final, 0 dead letters, no
command run by hand, all final within 60 s of clamd's return.

The scan stage's circuit breaker (``shared.breaker``) opens when clamd does not answer its
``PING`` after a scan failed: the consumer leaves the queue, what was in flight is parked
without spending an attempt, and clamd is probed with backoff until it answers; then the stage
consumes again by itself.

The outage lasts ``SLUICE_FAULT_CLAMD_OUTAGE_S`` seconds, 25 by default: many times the whole
retry budget (1.5 s: 3 attempts, 1 s base delay, the defaults this test runs with), so before
the breaker every scan in flight would have been dead-lettered. The suite keeps it that short to
stay fast; the 120 s outage of the acceptance was run by hand with
``SLUICE_FAULT_CLAMD_OUTAGE_S=120`` (figures in docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.retry import retry_budget_s
from tests.faults.checks import REPORTS, final_count, queue_depths, verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.private_clamd import PrivateClamd
from tests.faults.workload import UploadResults, mixed_uploads, upload_all

pytestmark = pytest.mark.faults

OUTAGE_S = float(os.environ.get("SLUICE_FAULT_CLAMD_OUTAGE_S", "25"))
UPLOADS = 200
#: Seconds from clamd's return until every file must be final (the issue's acceptance).
RECOVERY_S = 60


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
        extra_env={
            "SLUICE_CLAMD_PORT": str(clamd.port),
            "SLUICE_CLAMD_TIMEOUT_S": "5",
            # The default retry policy: a budget of 1.5 s, far shorter than the outage.
            "SLUICE_AMQP_RETRY_BASE_DELAY_S": "1",
            "SLUICE_AMQP_MAX_ATTEMPTS": "3",
        },
    )
    cluster.prepare()
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def _scan_readyz(cluster: Cluster) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{cluster.health_ports['scan']}/readyz", timeout=5)


def _dependency_up(cluster: Cluster) -> str | None:
    text = httpx.get(f"http://127.0.0.1:{cluster.health_ports['scan']}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('sluice_dependency_up{dependency="clamd",stage="scan"}'):
            return line.rsplit(" ", 1)[1]
    return None


def test_a_clamd_outage_dead_letters_nothing_and_heals_by_itself(
    cluster: Cluster, clamd: PrivateClamd
) -> None:
    assert OUTAGE_S > 10 * retry_budget_s(3, 1.0, 5.0), "the outage must dwarf the retry budget"
    stopped_at = 0.0

    async def scenario() -> UploadResults:
        nonlocal stopped_at
        async with cluster.client() as client:
            uploading = asyncio.create_task(
                upload_all(client, mixed_uploads(UPLOADS, seed=42), concurrency=6)
            )
            await asyncio.sleep(2)
            await asyncio.to_thread(clamd.stop)
            stopped_at = time.monotonic()
            return await uploading

    results = asyncio.run(scenario())
    assert len(results.accepted) == UPLOADS, results.refused[:3]
    ids = list(results.accepted)

    # While clamd is away: the scan stage is not ready and names clamd; nothing dead-letters.
    deadline = time.monotonic() + 30
    while (answer := _scan_readyz(cluster)).status_code != 503:
        assert time.monotonic() < deadline, "the scan stage's breaker never opened"
        time.sleep(0.3)
    assert "clamd" in answer.json()["error"]["message"], answer.text
    assert answer.json()["breakers"]["scan"]["dependency"] == "clamd"
    assert _dependency_up(cluster) == "0.0"
    status = cluster.cli(
        "status", "--json", "--worker", f"http://127.0.0.1:{cluster.health_ports['scan']}"
    )
    assert '"breaker": "open"' in status or '"breaker": "probing"' in status, status[-2000:]
    for name in ("store", "thumbnail", "commit"):
        assert cluster.ready(name), f"{name} must not be affected by clamd's outage"
    while time.monotonic() < stopped_at + OUTAGE_S:
        assert queue_depths(cluster)[f"{cluster.prefix}.scan.dlq"] == 0
        time.sleep(1)
    final_during = final_count(cluster, ids)
    scanned_late = cluster.sql(
        "SELECT count(*) FROM file_events WHERE event_type = 'file.scanned'"
        " AND occurred_at > now() - make_interval(secs => %s)",
        OUTAGE_S - 2,
    )[0][0]
    assert scanned_late == 0, "nothing passes the scan while clamd is down"

    clamd.start()
    back_at = time.monotonic()
    deadline = back_at + RECOVERY_S
    while final_count(cluster, ids) < len(ids):
        assert time.monotonic() < deadline, (
            f"{final_count(cluster, ids)}/{len(ids)} final {RECOVERY_S} s after clamd's return"
        )
        time.sleep(0.5)
    recovered_s = time.monotonic() - back_at
    wait_drained(cluster, results, timeout_s=60)
    assert cluster.ready("scan")
    assert _dependency_up(cluster) == "1.0"

    log = cluster.log_tail("scan", 5_000_000)
    opened, closed = log.count('"breaker opened"'), log.count('"breaker closed"')
    parked, retried = log.count('"outcome": "parked"'), log.count('"outcome": "retry"')
    assert opened >= 1 and closed == opened, (opened, closed)
    report = verify(cluster, results, f"clamd down {OUTAGE_S:.0f} s, healed by itself")
    assert report.dead_lettered == 0 and report.duplicates == 0
    REPORTS.append(
        f"[fault clamd-outage] outage_s={OUTAGE_S:.0f} final_during_outage={final_during} "
        f"final={report.available + report.rejected}/{len(ids)} lost=0 "
        f"all_final_s_after_return={recovered_s:.1f} breaker_opened={opened} parked={parked} "
        f"attempts_spent={retried} dead_lettered={report.dead_lettered}"
    )
