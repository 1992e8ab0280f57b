"""Fault: S3 is down while deleted files are purged (docs/gdpr.md, docs/reliability.md).

A private SeaweedFS (``tests/faults/private_seaweedfs.py``) holds 20 available files (originals
and thumbnails). It is stopped; 8 more files are uploaded and end in the Base64 fallback
(``fallback_blobs``). Every one of the 28 is then deleted over HTTP while S3 is down: each
answers 202 and reads 404 at once. The purge worker cannot list the bucket: its messages retry
with backoff behind its circuit breaker, none is dead-lettered. S3 comes back (and the fallback
worker may migrate a deleted file's row back to S3 at the same moment: the commit stage drops
that late ``file.stored`` and asks for another purge). At the end nothing is left: no object
under the files' keys, no fallback row, no version row, no spool file, no message in any queue,
and each file's history is its one ``file.deleted``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.checks import REPORTS, queue_depths
from tests.faults.cluster import Cluster
from tests.faults.private_seaweedfs import PrivateSeaweedFS, private_seaweedfs
from tests.faults.workload import _payloads, upload_all

pytestmark = pytest.mark.faults

STORED, IN_FALLBACK = 20, 8


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[PrivateSeaweedFS]:
    with private_seaweedfs(tmp_path / "seaweedfs") as instance:
        yield instance


@pytest.fixture
def cluster(services: object, s3: PrivateSeaweedFS, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path,
        "faults_purge",
        s3=s3,
        extra_env={
            "SLUICE_AMQP_RETRY_BASE_DELAY_S": "0.5",
            "SLUICE_AMQP_RETRY_MAX_DELAY_S": "2",
            "S3_TIMEOUT_S": "5",
            "SLUICE_FALLBACK_PROBE_INTERVAL_S": "1",
        },
    )
    cluster.prepare()
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def _statuses(cluster: Cluster, ids: list[str]) -> dict[str, int]:
    rows = cluster.sql(
        "SELECT status, count(*) FROM files WHERE file_id = ANY(%s::uuid[]) GROUP BY status", ids
    )
    return {status: int(n) for status, n in rows}


def _keys(cluster: Cluster, ids: list[str]) -> list[str]:
    client = cluster.s3_client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return [key for key in keys if any(file_id in key for file_id in ids)]


def _purge_log(cluster: Cluster) -> list[dict[str, object]]:
    lines = (cluster.tmp / "purge.log").read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_purge_retries_while_s3_is_down_and_leaves_nothing(
    cluster: Cluster, s3: PrivateSeaweedFS
) -> None:
    photos = [u for u in _payloads() if u.name == "photo-1200.jpg"][:1] * (STORED + IN_FALLBACK)

    async def send(count: int) -> list[str]:
        async with cluster.client() as client:
            results = await upload_all(client, photos[:count])
        assert not results.refused, results.refused[:3]
        return list(results.accepted)

    stored = asyncio.run(send(STORED))
    cluster.wait_for(lambda: _statuses(cluster, stored) == {"available": STORED}, 120, "available")
    assert len(_keys(cluster, stored)) == STORED * 3  # original, thumbnail, preview

    s3.stop()
    fallback = asyncio.run(send(IN_FALLBACK))
    cluster.wait_for(
        lambda: _statuses(cluster, fallback) == {"fallback": IN_FALLBACK}, 180, "fallback"
    )
    ids = stored + fallback
    assert cluster.sql("SELECT count(*) FROM fallback_blobs") == [(IN_FALLBACK,)]

    async def delete_all() -> list[tuple[int, int]]:
        async with cluster.client() as client:
            answers = []
            for file_id in ids:
                deleted = await client.delete(f"/v1/files/{file_id}")
                after = await client.get(f"/v1/files/{file_id}")
                answers.append((deleted.status_code, after.status_code))
            return answers

    started = time.monotonic()
    assert set(asyncio.run(delete_all())) == {(202, 404)}
    cluster.wait_for(lambda: _statuses(cluster, ids) == {"deleted": len(ids)}, 60, "deleted")
    time.sleep(10)  # the purge meets S3 down for a while
    assert cluster.sql("SELECT count(*) FROM fallback_blobs") == [(IN_FALLBACK,)]  # not yet
    assert queue_depths(cluster)[f"{cluster.prefix}.purge.dlq"] == 0

    s3.start()
    s3.ensure_bucket(cluster.bucket)

    def purged() -> bool:
        depths = queue_depths(cluster)
        return (
            not any(depths.values())
            and not _keys(cluster, ids)
            and cluster.sql("SELECT count(*) FROM fallback_blobs") == [(0,)]
        )

    cluster.wait_for(purged, 180, "every deleted file purged")
    elapsed_s = time.monotonic() - started
    time.sleep(3)  # a late migration or purge would land by now
    assert _keys(cluster, ids) == []
    assert cluster.sql("SELECT count(*) FROM fallback_blobs") == [(0,)]
    assert cluster.sql(
        "SELECT count(*) FROM file_versions WHERE file_id = ANY(%s::uuid[])", ids
    ) == [(0,)]
    history = cluster.sql(
        "SELECT event_type, count(*) FROM file_events WHERE file_id = ANY(%s::uuid[])"
        " GROUP BY event_type",
        ids,
    )
    assert history == [("file.deleted", len(ids))]
    assert not any(queue_depths(cluster).values())
    assert [p.name for p in cluster.spool_dir.glob("*-*-*-*-*")] == []

    log = _purge_log(cluster)
    outcomes = Counter(
        str(line.get("outcome")) for line in log if line.get("event") == "message handled"
    )
    retries = outcomes["retry"] + outcomes["parked"] + outcomes["requeued"]
    purges = sum(1 for line in log if line.get("event") == "file purged")
    dead = outcomes["dead-lettered"]
    assert dead == 0
    REPORTS.append(
        f"[fault purge-s3-down] deleted={len(ids)} in_fallback_when_deleted={IN_FALLBACK} "
        f"purges={purges} purge_retries_or_parked={retries} dead_lettered={dead} objects_left=0 "
        f"fallback_rows_left=0 seconds_to_nothing_left={elapsed_s:.0f}"
    )
