"""Fault 3: PostgreSQL restarted (twice, fast then immediate) during a run: 0 lost, 0 duplicated.

The commit stage retries while the database is away; the gateway answers 503 to uploads it
cannot authenticate meanwhile. The database is a private cluster
(``tests/faults/private_services.py``), so restarting it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.retry import retry_budget_s
from tests.faults.checks import verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.private_services import PrivatePostgres, private_postgres
from tests.faults.workload import UploadResults, mixed_uploads, upload_all

pytestmark = pytest.mark.faults


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as cluster:
        yield cluster


@pytest.fixture
def cluster(services: object, postgres: PrivatePostgres, tmp_path: Path) -> Iterator[Cluster]:
    # A retry budget (11 s, ``retry_budget_s(5, 2, 10)``) longer than both restarts together:
    # the promise is "an outage shorter than the budget dead-letters nothing".
    cluster = Cluster(
        tmp_path,
        "faults_pg",
        postgres_url=postgres.server_url,
        extra_env={
            "SLUICE_AMQP_MAX_ATTEMPTS": "5",
            "SLUICE_AMQP_RETRY_BASE_DELAY_S": "2",
            "SLUICE_AMQP_RETRY_MAX_DELAY_S": "10",
        },
    )
    cluster.prepare()
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def test_database_restarts_lose_nothing_and_duplicate_nothing(
    cluster: Cluster, postgres: PrivatePostgres
) -> None:
    outage_s = 0.0

    async def scenario() -> UploadResults:
        nonlocal outage_s
        async with cluster.client() as client:
            uploading = asyncio.create_task(
                upload_all(client, mixed_uploads(300, seed=4), concurrency=6)
            )
            await asyncio.sleep(2)
            t0 = time.monotonic()
            await asyncio.to_thread(postgres.restart, "fast")
            await asyncio.sleep(2)
            await asyncio.to_thread(postgres.restart, "immediate")
            outage_s = time.monotonic() - t0
            return await uploading

    results = asyncio.run(scenario())
    budget_s = retry_budget_s(5, 2.0, 10.0)
    assert outage_s < budget_s, f"restarts took {outage_s:.1f} s, beyond the {budget_s} s budget"
    assert {status for _, status, _ in results.refused} <= {503}, results.refused[:3]
    wait_drained(cluster, results, timeout_s=300)
    report = verify(cluster, results, f"PostgreSQL restarted twice, {len(results.refused)} got 503")
    assert report.duplicates == 0
