"""Fault: PostgreSQL stopped just as resumable uploads of new versions complete, then started.

A tus upload naming one of the caller's files (``file_id`` in ``Upload-Metadata``) reserves its
version number in PostgreSQL when its last byte arrives (``services/gateway/tus/transfer.py``).
With PostgreSQL down, that last PATCH answers 503 ``database_unavailable``, but its bytes are
kept: the upload's offset is its length. Once PostgreSQL is back, a HEAD completes each upload
(as a tus client resuming would ask), each gets a number of its own, and each version is
committed once. Nothing is lost, nothing is announced twice, nothing is dead-lettered, and no
person had to act. The database is a private cluster (``tests/faults/private_services.py``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.topology import STAGES, Topology
from tests.faults.checks import REPORTS, queue_depths
from tests.faults.cluster import Cluster
from tests.faults.corpus import sample
from tests.faults.private_services import PrivatePostgres, private_postgres

pytestmark = pytest.mark.faults

VERSIONS = 3
TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {**TUS, "Content-Type": "application/offset+octet-stream"}
HELD_BACK = 1000  # bytes of each upload sent only once PostgreSQL is down


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as cluster:
        yield cluster


@pytest.fixture
def cluster(services: object, postgres: PrivatePostgres, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, "faults_tusv", postgres_url=postgres.server_url)
    cluster.prepare()
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def _meta(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def _wait(
    cluster: Cluster, query: str, expected: object, timeout_s: float, *params: object
) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := next(iter(cluster.sql(query, *params)), (None,))[0]) != expected:
        assert time.monotonic() < deadline, f"{query}: {got}, expected {expected}"
        time.sleep(0.3)


def test_versions_completed_during_a_database_outage_are_committed_once(
    cluster: Cluster, postgres: PrivatePostgres
) -> None:
    photo = sample("photo-rotated.jpg")
    versions = [photo + bytes([n]) * 2000 for n in range(VERSIONS)]  # JPEGs still, each unique

    async def scenario() -> tuple[str, list[int], list[int]]:
        async with cluster.client() as client:
            first = await client.post("/v1/files", files={"file": ("photo.jpg", photo)})
            assert first.status_code == 202, first.text
            file_id = first.json()["file_id"]
            await asyncio.to_thread(
                _wait,
                cluster,
                "SELECT status FROM files WHERE file_id = %s",
                "available",
                120,
                file_id,
            )
            urls = []
            for n, data in enumerate(versions):
                created = await client.post(
                    "/v1/uploads/",
                    headers={
                        **TUS,
                        "Upload-Length": str(len(data)),
                        "Upload-Metadata": _meta(filename=f"v{n}.jpg", file_id=file_id),
                    },
                )
                assert created.status_code == 201, created.text
                url = created.headers["location"]
                head = data[: len(data) - HELD_BACK]
                sent = await client.patch(
                    url, headers={**STREAM, "Upload-Offset": "0"}, content=head
                )
                assert sent.status_code == 204, sent.text
                urls.append(url)

            await asyncio.to_thread(postgres.stop, "fast")
            refused = []
            for url, data in zip(urls, versions, strict=True):
                offset = len(data) - HELD_BACK
                last = await client.patch(
                    url, headers={**STREAM, "Upload-Offset": str(offset)}, content=data[offset:]
                )
                refused.append(last.status_code)
                assert last.status_code == 503, last.text
                assert last.json()["error"]["code"] == "database_unavailable"
            await asyncio.to_thread(postgres.start)

            numbers = []
            for url, data in zip(urls, versions, strict=True):
                answer = await _head_until_complete(client, url)
                assert answer.headers["upload-offset"] == str(len(data))
                assert answer.headers["sluice-file-id"] == file_id
                numbers.append(int(answer.headers["sluice-version-number"]))
            return file_id, refused, numbers

    file_id, refused, numbers = asyncio.run(scenario())
    assert sorted(numbers) == list(range(2, 2 + VERSIONS)), numbers
    _wait(
        cluster,
        "SELECT count(*) FROM file_versions WHERE file_id = %s AND status = 'available'",
        1 + VERSIONS,
        180,
        file_id,
    )

    stored = dict(
        cluster.sql("SELECT version_number, sha256 FROM file_versions WHERE file_id = %s", file_id)
    )
    by_number = dict(zip(numbers, versions, strict=True))
    lost = sum(stored.get(n) != hashlib.sha256(data).hexdigest() for n, data in by_number.items())
    received = Counter(
        row[0]
        for row in cluster.sql(
            "SELECT version_number FROM file_events"
            " WHERE file_id = %s AND event_type = 'file.received'",
            file_id,
        )
    )
    duplicated = sum(count - 1 for count in received.values())
    depths = queue_depths(cluster)
    topology = Topology(prefix=cluster.prefix)
    dead_lettered = sum(depths[topology.dead_letter_queue(stage)] for stage in STAGES)
    current = cluster.sql("SELECT current_version FROM files WHERE file_id = %s", file_id)[0][0]
    assert (lost, duplicated, dead_lettered) == (0, 0, 0), (stored, received, depths)
    assert current == 1 + VERSIONS  # the newest available version is the file's
    REPORTS.append(
        f"[fault tus-version-outage] accepted={VERSIONS} refused_while_down={len(refused)} "
        f"completed_after={len(numbers)} final={len(stored) - 1}/{VERSIONS} lost={lost} "
        f"duplicated={duplicated} dead_lettered={dead_lettered}"
    )


async def _head_until_complete(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """HEAD ``url`` until it names the file, as a tus client resuming does (PostgreSQL may take
    a moment to take connections again after its start)."""
    deadline = time.monotonic() + 60
    while True:
        answer = await client.head(url, headers=TUS)
        assert answer.status_code in (200, 503), answer.status_code
        if "sluice-file-id" in answer.headers:
            return answer
        assert time.monotonic() < deadline, dict(answer.headers)
        await asyncio.sleep(0.5)
