"""Fault 5: the same ``file.received`` published twice, and messages redelivered after their
effect but before their ack (replayed here by publishing each stage's input again, exactly as
RabbitMQ would redeliver it): one effect each.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from shared import devservices
from shared.adapters.broker import event_message
from shared.events import FileReceived, parse_event
from tests.faults.checks import verify, wait_drained
from tests.faults.cluster import Cluster
from tests.faults.workload import SAMPLES, Upload, mixed_uploads, upload_all

pytestmark = pytest.mark.faults


@pytest.fixture
def cluster(services: object, tmp_path: Path) -> Iterator[Cluster]:
    upstream = "sluice-faults-dup-upstream"
    cluster = Cluster(tmp_path, "faults_dup", extra_env={"S3_UPSTREAM_BUCKETS": f'["{upstream}"]'})
    devservices.up(buckets=[upstream])
    cluster.prepare()
    cluster.start_all()
    yield cluster
    codes = cluster.stop_all()
    assert codes == dict.fromkeys(codes, 0), f"SIGTERM must drain and exit 0: {codes}"


async def _publish(cluster: Cluster, messages: list[tuple[str, str, bytes]]) -> None:
    """Publish raw bodies: (exchange, routing key, body); "" is the default exchange."""
    connection = await aio_pika.connect(cluster.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for exchange_name, routing_key, body in messages:
            exchange = (
                channel.default_exchange
                if not exchange_name
                else await channel.get_exchange(exchange_name)
            )
            event = parse_event(body)
            await exchange.publish(event_message(event), routing_key=routing_key, timeout=30)


def _snapshot(cluster: Cluster) -> dict[str, Any]:
    s3 = devservices.s3_client()
    objects = {
        item["Key"]: (item["LastModified"], item["ETag"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket)
        for item in page.get("Contents", [])
    }
    return {
        "objects": objects,
        "events": cluster.sql("SELECT count(*) FROM file_events")[0][0],
        "versions": cluster.sql("SELECT count(*) FROM file_versions")[0][0],
    }


def test_duplicated_and_redelivered_events_have_one_effect(cluster: Cluster) -> None:
    uploads = mixed_uploads(40, seed=5)

    async def send() -> Any:
        async with cluster.client() as client:
            return await upload_all(client, uploads)

    results = asyncio.run(send())
    assert len(results.accepted) == len(uploads)

    # The same new file.received published twice, back to back, by an upstream service.
    s3 = devservices.s3_client()
    data = (SAMPLES / "photo.png").read_bytes()
    twins = []
    for n in range(5):
        key = f"incoming/{n}.png"
        s3.put_object(Bucket="sluice-faults-dup-upstream", Key=key, Body=data)
        event = FileReceived.new(
            file_id=uuid.uuid4(),
            owner="alice",
            source=f"s3://sluice-faults-dup-upstream/{key}",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            content_type="image/png",
            original_name=f"{n}.png",
        )
        body = event.model_dump_json().encode()
        twins += [(f"{cluster.prefix}.events", "file.received", body)] * 2
        results.accepted[str(event.file_id)] = Upload(f"{n}.png", data, "available", True)
    asyncio.run(_publish(cluster, twins))
    wait_drained(cluster, results)
    before = _snapshot(cluster)
    verify(cluster, results, "duplicate file.received")

    # Every stage's input delivered again after its effect (the ack was "lost").
    rows = cluster.sql("SELECT event_type, payload FROM file_events ORDER BY occurred_at")
    target = {
        "file.received": f"{cluster.prefix}.scan",
        "file.scanned": f"{cluster.prefix}.store",
        "file.stored": f"{cluster.prefix}.thumbnail",
        "file.thumbnailed": f"{cluster.prefix}.commit",
        "file.rejected": f"{cluster.prefix}.commit",
    }
    again = [
        ("", target[event_type], json.dumps(payload).encode())
        for event_type, payload in rows
        if event_type in target
    ]
    assert len(again) > 4 * len(uploads)
    asyncio.run(_publish(cluster, again))
    time.sleep(1)
    wait_drained(cluster, results)
    after = _snapshot(cluster)
    assert after["events"] == before["events"], "a redelivery added history rows"
    assert after["versions"] == before["versions"]
    assert after["objects"] == before["objects"], "a redelivery wrote an object again"
    report = verify(cluster, results, f"redelivered after effect ({len(again)} messages)")
    assert report.duplicates == 0
