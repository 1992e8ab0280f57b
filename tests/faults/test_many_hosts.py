"""Many hosts: the gateway and every stage as separate processes that share nothing on disk.

Each process runs in a directory of its own, as if on its own host: its own working directory
and its own ``SLUICE_SPOOL_DIR`` (where a gateway keeps its event outbox), and the S3 spool
(``SLUICE_SPOOL_BACKEND=s3``), so that uploaded bytes travel between them only through the
quarantine bucket. They share RabbitMQ, PostgreSQL and S3, as hosts of a real deployment do.
Two gateways, three thumbnail workers and two of every other stage (scan, store, commit,
fallback). (Network namespaces would separate them further; they would also need the shared
services reachable from inside them, which the machines the suite runs on do not offer.)

Uploads go to both gateways at once; midway, one scan worker and one thumbnail worker are
killed (``SIGKILL``) and started again. Then every accepted file must be final with its bytes,
one version, its thumbnails and one ``file.committed``; nothing lost, duplicated or
dead-lettered; no process's directory may hold a spooled byte, and the quarantine bucket is
empty once every file is committed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import httpx
import pytest

from tests.e2e.pipeline import free_port
from tests.faults.checks import REPORTS, verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.workload import UploadResults, mixed_uploads, upload_all

pytestmark = pytest.mark.faults

QUARANTINE = "sluice-faults-hosts-q"
#: Processes per kind: two gateways, three thumbnail workers, two of every other stage.
REPLICAS = {"gateway": 2, "scan": 2, "store": 2, "thumbnail": 3, "commit": 2, "fallback": 2}


class Hosts(Cluster):
    """A cluster whose processes are named ``<kind>-<n>`` and each run in ``<tmp>/<name>/``."""

    def host_dir(self, name: str) -> Path:
        return self.tmp / "hosts" / name

    def process_spec(self, name: str) -> tuple[list[str], dict[str, str], Path]:
        kind = name.rsplit("-", 1)[0]
        home = self.host_dir(name)
        (home / "spool").mkdir(parents=True, exist_ok=True)
        env = {**self.env, "SLUICE_SPOOL_DIR": str(home / "spool"), "SLUICE_STATE_DIR": str(home)}
        port = str(self.health_ports.setdefault(name, free_port()))
        if kind == "gateway":
            env["SLUICE_GATEWAY_PORT"] = port
            env["SLUICE_GATEWAY_METRICS_PORT"] = str(free_port())
            return ["gateway"], env, home
        env["SLUICE_WORKER_HEALTH_PORT"] = port
        return ["worker", kind], env, home

    def gateway_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.health_ports[name]}"

    def workers(self) -> tuple[str, ...]:
        return tuple(name for name in self.processes if not name.startswith("gateway"))


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def hosts(services: object, tmp_path: Path) -> Iterator[Hosts]:
    cluster = Hosts(
        tmp_path,
        "faults_hosts",
        extra_env={"SLUICE_SPOOL_BACKEND": "s3", "SLUICE_SPOOL_S3_BUCKET": QUARANTINE},
    )
    cluster.prepare()
    s3 = cluster.s3_client()
    try:
        s3.create_bucket(Bucket=QUARANTINE)
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=QUARANTINE):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=QUARANTINE, Key=item["Key"])
    for kind, count in REPLICAS.items():
        for n in range(1, count + 1):
            cluster.start(f"{kind}-{n}")
    deadline = time.monotonic() + 60
    for name in ("gateway-1", "gateway-2"):
        while not _healthy(cluster.gateway_url(name)):
            assert cluster.alive(name), cluster.log_tail(name)
            assert time.monotonic() < deadline, f"{name} not up: {cluster.log_tail(name)}"
            time.sleep(0.2)
    cluster.wait_ready(cluster.workers())
    yield cluster
    cluster.stop_all()


def test_many_hosts_share_nothing_on_disk_and_lose_nothing(hosts: Hosts) -> None:
    uploads = mixed_uploads(160, seed=21)
    halves = uploads[::2], uploads[1::2]

    async def scenario() -> UploadResults:
        results = UploadResults()
        clients = [hosts.client() for _ in range(2)]
        for client, name in zip(clients, ("gateway-1", "gateway-2"), strict=True):
            client.base_url = hosts.gateway_url(name)
        async with clients[0], clients[1]:
            sending = [
                asyncio.create_task(upload_all(client, half, concurrency=3))
                for client, half in zip(clients, halves, strict=True)
            ]
            await asyncio.sleep(3)
            for name in ("scan-1", "thumbnail-2"):
                await asyncio.to_thread(hosts.kill, name, signal.SIGKILL)
                hosts.start(name)
            for done in await asyncio.gather(*sending):
                results.accepted.update(done.accepted)
                results.refused.extend(done.refused)
        return results

    results = asyncio.run(scenario())
    assert results.refused == [], results.refused[:3]
    wait_drained(hosts, results, timeout_s=300)
    report = verify(hosts, results, "many hosts, nothing shared on disk, S3 spool")
    lost = report.accepted - report.available - report.rejected

    # Nothing spooled is left in any process's directory (a gateway's outbox holds at most its
    # relay's lock file), and the commit stage emptied the quarantine bucket.
    spooled = [
        path.relative_to(hosts.tmp)
        for name in hosts.processes
        for path in (hosts.host_dir(name) / "spool").rglob("*")
        if path.is_file() and path.name != ".relay.lock"
    ]
    quarantined = hosts.s3_client().list_objects_v2(Bucket=QUARANTINE).get("KeyCount", 0)
    assert lost == 0 and report.duplicates == 0 and report.dead_lettered == 0, report
    assert spooled == [], spooled
    assert quarantined == 0
    REPORTS.append(
        f"[fault many-hosts] lost={lost} processes={len(hosts.processes)}"
        f" ({', '.join(f'{kind}={n}' for kind, n in REPLICAS.items())}) kills=2"
        f" spooled_left={len(spooled)} quarantine_left={quarantined}"
    )
