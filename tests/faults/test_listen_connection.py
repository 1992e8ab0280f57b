"""Fault: the gateway's LISTEN connection is killed (``pg_terminate_backend``) while event streams
are open.

Every accepted upload is followed at once through ``GET /v1/files/{id}/events`` on one
connection that is never reopened by the client; meanwhile the gateway's LISTEN connection (found
by its ``application_name``) is terminated again and again. The gateway listens again and every
stream reads ``file_events`` past its last sent id, so each stream must deliver every event of
its file, each once, in order, and end after ``file.committed``. Keep-alives (and the re-read
that follows each) are set 120 s apart, so only the reconnect's re-read can fill the gaps.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from services.gateway.listener import APPLICATION_NAME
from tests.faults.checks import REPORTS, verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.workload import Upload, UploadResults, mixed_uploads

pytestmark = pytest.mark.faults
UPLOADS = 60
KILLS = 10


@pytest.fixture
def cluster(services: object, tmp_path: Path) -> Iterator[Cluster]:
    env = {"SLUICE_STREAM_KEEPALIVE_S": "120", "SLUICE_STREAM_MAX_PER_OWNER": "200"}
    cluster = Cluster(tmp_path, "faults_listen", extra_env=env)
    cluster.prepare()
    cluster.start_all()
    yield cluster
    codes = cluster.stop_all()
    assert codes == dict.fromkeys(codes, 0), f"SIGTERM must drain and exit 0: {codes}"


async def follow(client: httpx.AsyncClient, file_id: str) -> tuple[list[int], bool]:
    """The ids one stream delivered, and whether it ended after ``file.committed``."""
    ids: list[int] = []
    async with aconnect_sse(client, "GET", f"/v1/files/{file_id}/events") as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for message in source.aiter_sse():
            ids.append(int(message.id))
            if message.event == "file.committed":
                return ids, True
    return ids, False


def terminate_listeners(cluster: Cluster) -> int:
    """Terminate the gateway's LISTEN connection(s); how many were terminated."""
    rows = cluster.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = %s AND datname = %s",
        APPLICATION_NAME,
        f"sluice_{cluster.name}",
    )
    return sum(1 for (done,) in rows if done)


def test_killing_the_listen_connection_loses_no_event_of_any_open_stream(
    cluster: Cluster,
) -> None:
    uploads = mixed_uploads(UPLOADS, seed=12)
    results = UploadResults()
    streams: dict[str, asyncio.Task[tuple[list[int], bool]]] = {}
    open_at_kills: list[int] = []

    async def scenario() -> int:
        async with cluster.client() as client:
            client.timeout = httpx.Timeout(60.0, read=None)
            queue: asyncio.Queue[Upload] = asyncio.Queue()
            for upload in uploads:
                queue.put_nowait(upload)

            async def sender() -> None:
                while not queue.empty():
                    upload = queue.get_nowait()
                    files = {"file": (upload.name, upload.data)}
                    answer = await client.post("/v1/files", files=files)
                    if answer.status_code != 202:
                        results.refused.append((upload, answer.status_code, answer.text[:300]))
                        continue
                    file_id = answer.json()["file_id"]
                    results.accepted[file_id] = upload
                    streams[file_id] = asyncio.create_task(follow(client, file_id))
                    await asyncio.sleep(0.05)

            async def killer() -> int:
                killed = 0
                for _ in range(KILLS):
                    await asyncio.sleep(0.25)
                    open_at_kills.append(sum(1 for task in streams.values() if not task.done()))
                    killed += await asyncio.to_thread(terminate_listeners, cluster)
                return killed

            killed, *_ = await asyncio.gather(killer(), *(sender() for _ in range(3)))
            await asyncio.wait_for(asyncio.gather(*streams.values()), timeout=90)
            return int(killed)

    started = time.monotonic()
    killed = asyncio.run(scenario())
    wait_drained(cluster, results, timeout_s=120)
    verify(cluster, results, "LISTEN connection killed (streams)")

    committed = dict(
        cluster.sql(
            "SELECT file_id::text, seq FROM file_events"
            " WHERE event_type = 'file.committed' AND file_id = ANY(%s::uuid[])",
            list(results.accepted),
        )
    )
    expected = delivered = missed = duplicated = completed = 0
    for file_id, task in streams.items():
        ids, ended = task.result()
        want = set(range(1, committed[file_id] + 1))
        expected += len(want)
        delivered += len(ids)
        missed += len(want - set(ids))
        duplicated += sum(n - 1 for n in Counter(ids).values() if n > 1)
        completed += ended and ids == sorted(want)
    listening = 0
    deadline = time.monotonic() + 10
    while listening == 0 and time.monotonic() < deadline:  # listening again after the last kill
        time.sleep(0.2)
        listening = len(
            cluster.sql(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", APPLICATION_NAME
            )
        )
    line = (
        f"[fault listen] streams_opened={len(streams)} completed={completed} "
        f"events_expected={expected} delivered={delivered} missed={missed} "
        f"duplicated={duplicated} listen_kills={killed} "
        f"streams_open_at_each_kill={open_at_kills} listening_after={listening} "
        f"seconds={time.monotonic() - started:.0f}"
    )
    REPORTS.append(line)
    print(line)
    assert killed >= KILLS // 2, f"the LISTEN connection was not there to kill: {line}"
    assert listening == 1, f"the gateway did not listen again after the last kill: {line}"
    assert sum(open_at_kills) > 0, f"no stream was open when the connection was killed: {line}"
    assert (missed, duplicated) == (0, 0), line
    assert completed == len(streams) == len(results.accepted), line
