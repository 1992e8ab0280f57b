"""Fault 3: PostgreSQL stopped while the commit stage works, then started: 0 dead letters, 0 lost,
0 duplicated, and no command run by hand.

The stages that use PostgreSQL (commit; scan, for the states of late redeliveries; fallback)
open their circuit breaker (``shared.breaker``) when it does not answer ``SELECT 1`` after a
failure: their consumers leave the queues, what was in flight is parked without spending an
attempt, and they resume by themselves once PostgreSQL answers.

The outage lasts ``SLUICE_FAULT_POSTGRES_OUTAGE_S`` seconds, 20 by default: many times the
retry budget (1.5 s: 3 attempts, 1 s base delay, the defaults this test runs with), so before
the breaker the commits in flight would have been dead-lettered. The suite keeps it that short
to stay fast; the 60 s outage of the acceptance was run by hand with
``SLUICE_FAULT_POSTGRES_OUTAGE_S=60`` (figures in docs/reliability.md). No upload is refused
meanwhile: the gateway trusts the API key it verified before the outage (its key cache, with
stale-if-error) and needs nothing else of PostgreSQL to accept a file. The database is a
private cluster (``tests/faults/private_services.py``), so stopping it disturbs no other test.
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
from tests.faults.checks import REPORTS, verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.private_services import PrivatePostgres, private_postgres
from tests.faults.workload import UploadResults, mixed_uploads, upload_all

pytestmark = pytest.mark.faults

OUTAGE_S = float(os.environ.get("SLUICE_FAULT_POSTGRES_OUTAGE_S", "20"))
UPLOADS = 200


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as cluster:
        yield cluster


@pytest.fixture
def cluster(services: object, postgres: PrivatePostgres, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path,
        "faults_pg",
        postgres_url=postgres.server_url,
        extra_env={
            # The default retry policy: a budget of 1.5 s, far shorter than the outage.
            "SLUICE_AMQP_MAX_ATTEMPTS": "3",
            "SLUICE_AMQP_RETRY_BASE_DELAY_S": "1",
        },
    )
    cluster.prepare()
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def _commit_breaker(cluster: Cluster) -> dict[str, object]:
    port = cluster.health_ports["commit"]
    answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
    breaker: dict[str, object] = answer["breakers"]["commit"]
    return breaker


def test_a_database_outage_dead_letters_nothing_loses_nothing_duplicates_nothing(
    cluster: Cluster, postgres: PrivatePostgres
) -> None:
    assert OUTAGE_S > 10 * retry_budget_s(3, 1.0, 5.0), "the outage must dwarf the retry budget"
    breaker_seen: dict[str, object] = {}
    outage_s = 0.0

    async def scenario() -> UploadResults:
        nonlocal outage_s
        async with cluster.client() as client:
            uploading = asyncio.create_task(
                upload_all(client, mixed_uploads(UPLOADS, seed=4), concurrency=6)
            )
            # Stop it once the commit stage is at work.
            deadline = time.monotonic() + 30
            while not await asyncio.to_thread(
                lambda: cluster.sql("SELECT count(*) FROM files WHERE status = 'available'")[0][0]
            ):
                assert time.monotonic() < deadline, "nothing committed before the outage"
                await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await asyncio.to_thread(postgres.stop, "fast")
            while time.monotonic() < t0 + OUTAGE_S:
                breaker = await asyncio.to_thread(_commit_breaker, cluster)
                if breaker["state"] != "closed":
                    breaker_seen.update(breaker)
                await asyncio.sleep(1)
            await asyncio.to_thread(postgres.start)
            outage_s = time.monotonic() - t0
            return await uploading

    results = asyncio.run(scenario())
    assert results.refused == [], results.refused[:3]
    assert breaker_seen.get("dependency") == "postgresql", breaker_seen
    wait_drained(cluster, results, timeout_s=240)
    assert _commit_breaker(cluster)["state"] == "closed"

    log = cluster.log_tail("commit", 5_000_000)
    opened, parked = log.count('"breaker opened"'), log.count('"outcome": "parked"')
    retried = log.count('"outcome": "retry"')
    report = verify(
        cluster,
        results,
        f"PostgreSQL stopped {outage_s:.0f} s during {UPLOADS} uploads",
    )
    assert report.dead_lettered == 0 and report.duplicates == 0
    REPORTS.append(
        f"[fault postgres-outage] outage_s={outage_s:.0f} accepted={report.accepted} "
        f"refused={report.refused} final={report.available + report.rejected}/{report.accepted} "
        f"lost=0 duplicated={report.duplicates} commit_breaker_opened={opened} "
        f"commit_parked={parked} commit_attempts_spent={retried} "
        f"dead_lettered={report.dead_lettered}"
    )
