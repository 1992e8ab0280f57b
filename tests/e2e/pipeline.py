"""A real Sluice process (``python -m services run``) on its own database, prefix and bucket."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import psycopg

from shared import devservices
from shared.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
FINAL = {"available", "rejected"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _delete_topology(amqp_url: str, prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await Topology(prefix=prefix).delete(await connection.channel())


async def _depths(amqp_url: str, prefix: str) -> dict[str, int]:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        depths = {}
        for name in Topology(prefix=prefix).all_queues():
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = queue.declaration_result.message_count or 0
        return depths


def queue_depths(pipeline: Pipeline) -> dict[str, int]:
    """Ready messages in every queue of the pipeline's topology (work, retry, dead-letter)."""
    return asyncio.run(_depths(pipeline.env["SLUICE_AMQP_URL"], pipeline.prefix))


def empty_bucket(bucket: str) -> None:
    client = devservices.s3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])


@dataclass
class Pipeline:
    """Handles on the running pipeline for assertions."""

    url: str
    metrics_url: str
    env: dict[str, str]
    prefix: str
    database_url: str
    bucket: str
    spool_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    keys: dict[str, str]

    def client(self, owner: str | None = "alice") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[owner]}"} if owner else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return list(conn.execute(query, params).fetchall())

    async def publish_to_queue(self, stage: str, *messages: aio_pika.Message) -> None:
        """Publish ``messages`` straight to ``stage``'s work queue (default exchange), as an
        upstream service or a broken publisher would."""
        connection = await aio_pika.connect(self.env["SLUICE_AMQP_URL"])
        async with connection:
            channel = await connection.channel()
            queue = Topology(prefix=self.prefix).queue(stage)
            for message in messages:
                await channel.default_exchange.publish(message, routing_key=queue, timeout=30)

    def wait_final(
        self, file_id: str, owner: str = "alice", timeout_s: float = 120
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self.client(owner) as client:
            while time.monotonic() < deadline:
                answer = client.get(f"/v1/files/{file_id}")
                if answer.status_code == 200 and answer.json()["status"] in FINAL:
                    info: dict[str, Any] = answer.json()
                    return info
                assert self.process.poll() is None, f"sluice died; see {self.log_path}"
                time.sleep(0.2)
        raise AssertionError(f"{file_id} not final after {timeout_s}s; log: {self.log_path}")


def start_pipeline(
    tmp: Path,
    name: str,
    extra_env: Mapping[str, str] | None = None,
    *,
    local_storage: bool = False,
) -> Iterator[Pipeline]:
    """Start a fresh pipeline (fresh database, topology, bucket, spool); stop it with SIGTERM.

    ``extra_env`` is added to (or overrides) the processes' environment. With ``local_storage``
    objects go to the local backend in ``tmp/objects`` (``SLUICE_STORAGE_BACKEND=local``), S3
    is neither started nor emptied, and ``S3_ENDPOINT`` points at a closed port
    (``http://127.0.0.1:1``), so anything that still talked to S3 would fail."""
    base_db = "postgresql://postgres@127.0.0.1:5432"
    database = f"sluice_{name}"
    with psycopg.connect(f"{base_db}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    bucket = f"sluice-{name}"
    upstream = f"{bucket}-upstream"
    storage_env: dict[str, str] = {}
    if local_storage:
        devservices.up(only=["rabbitmq", "postgresql", "clamd"])
        (tmp / "objects").mkdir()
        storage_env = {
            "SLUICE_STORAGE_BACKEND": "local",
            "SLUICE_STORAGE_LOCAL_DIR": str(tmp / "objects"),
            "S3_ENDPOINT": "http://127.0.0.1:1",
        }
    else:
        devservices.up(buckets=[bucket, upstream])
        empty_bucket(bucket)
    amqp_url = "amqp://guest:guest@127.0.0.1:5672/"
    asyncio.run(_delete_topology(amqp_url, name))
    port, metrics_port = free_port(), free_port()
    spool = tmp / "spool"
    env = {
        **os.environ,
        "SLUICE_DATABASE_URL": f"{base_db}/{database}",
        "SLUICE_AMQP_URL": amqp_url,
        "SLUICE_AMQP_PREFIX": name,
        "SLUICE_AMQP_RETRY_BASE_DELAY_S": "0.2",
        "S3_BUCKET_NAME": bucket,
        "S3_UPSTREAM_BUCKETS": f'["{upstream}"]',
        "SLUICE_SPOOL_DIR": str(spool),
        "SLUICE_GATEWAY_PORT": str(port),
        "SLUICE_GATEWAY_METRICS_PORT": str(metrics_port),
        "SLUICE_LOG_FORMAT": "json",
        **storage_env,
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "services"]
    subprocess.run([*command, "migrate"], env=env, check=True, cwd=ROOT, capture_output=True)
    keys = {
        owner: subprocess.run(
            [*command, "keys", "create", "--owner", owner],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for owner in ("alice", "bob")
    }
    log_path = tmp / "sluice.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*command, "run"], env=env, cwd=ROOT, stdout=log, stderr=log)
    pipeline = Pipeline(
        url=f"http://127.0.0.1:{port}",
        metrics_url=f"http://127.0.0.1:{env['SLUICE_GATEWAY_METRICS_PORT']}",
        env=env,
        prefix=name,
        database_url=f"{base_db}/{database}",
        bucket=bucket,
        spool_dir=spool,
        log_path=log_path,
        process=process,
        keys=keys,
    )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"sluice run exited: {log_path.read_text()[-3000:]}"
        try:
            if httpx.get(f"{pipeline.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"gateway not up: {log_path.read_text()[-3000:]}"
        time.sleep(0.2)
    try:
        yield pipeline
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert code == 0, f"sluice run exited {code} on SIGTERM; log: {log_path}"
