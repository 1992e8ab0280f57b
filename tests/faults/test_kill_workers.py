"""Fault 1: ``kill -9`` of each worker type at random moments during 500 uploads.

Each kill lands wherever the worker is: mid-handler, between its effect and its publish, between
the publisher confirm and the ack. RabbitMQ redelivers whatever was unacked; the stages are
idempotent, so nothing may be lost and nothing done twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.faults.checks import REPORTS, verify, wait_drained
from tests.faults.cluster import WORKERS, Cluster
from tests.faults.workload import UploadResults, mixed_uploads, upload_all

pytestmark = pytest.mark.faults


@pytest.fixture
def cluster(services: object, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, "faults_kill")
    cluster.prepare()
    cluster.start_all()
    yield cluster
    codes = cluster.stop_all()
    assert codes == dict.fromkeys(codes, 0), f"SIGTERM must drain and exit 0: {codes}"


def _kill(cluster: Cluster, name: str, orphans: list[psutil.Process]) -> None:
    """``kill -9`` the worker ``name``; its child processes (the thumbnail worker's render
    processes) join ``orphans``."""
    try:
        children = psutil.Process(cluster.processes[name].pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    cluster.kill(name)
    orphans.extend(children)


def _running(process: psutil.Process) -> bool:
    """Whether ``process`` runs (a zombie, or one gone meanwhile, does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _still_running(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


async def _chaos(
    cluster: Cluster,
    uploading: asyncio.Task[UploadResults],
    seed: int,
    orphans: list[psutil.Process],
) -> int:
    """Kill and restart workers, round-robin in random order, until uploads end + 5 s."""
    rng = random.Random(seed)
    kills = 0
    loop = asyncio.get_running_loop()
    finished_at: float | None = None
    while finished_at is None or loop.time() - finished_at < 5:
        order = list(WORKERS)
        rng.shuffle(order)
        for name in order:
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            await asyncio.to_thread(_kill, cluster, name, orphans)
            kills += 1
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            cluster.start(name)
        if uploading.done() and finished_at is None:
            finished_at = loop.time()
    return kills


def test_kill_9_of_each_worker_loses_nothing_and_duplicates_nothing(cluster: Cluster) -> None:
    uploads = mixed_uploads(500, seed=1)
    orphans: list[psutil.Process] = []

    async def scenario() -> tuple[UploadResults, int]:
        async with cluster.client() as client:
            uploading = asyncio.create_task(upload_all(client, uploads, concurrency=6))
            kills = await _chaos(cluster, uploading, seed=1, orphans=orphans)
            return await uploading, kills

    results, kills = asyncio.run(scenario())
    assert len(results.accepted) == len(uploads), results.refused[:3]
    wait_drained(cluster, results, timeout_s=400)
    report = verify(cluster, results, f"kill -9 workers ({kills} kills)")
    assert report.duplicates == 0
    assert all(cluster.starts[name] >= 3 for name in WORKERS), cluster.starts
    # A killed thumbnail worker's render processes end too, not wait orphaned for ever.
    left = _still_running(orphans, timeout_s=10)
    REPORTS.append(
        f"[fault kill -9 workers, their render processes] children_of_killed={len(orphans)} "
        f"left_running={len(left)}"
    )
    assert orphans, "the thumbnail workers killed had render processes"
    assert left == [], [p.cmdline() for p in left]
