"""Prometheus ``/metrics`` of a running Sluice after a run whose counts the test knows.

One ``sluice run`` process (every worker and the gateway) on its own names (prefix, database
``sluice_t-obs-metrics``, bucket ``sluice-t-obs-metrics``), with the workers' health port
set. N images are uploaded and go through every stage; one upload is refused; two messages
fail at scan on purpose (a body that is not an event, bytes that do not match their SHA-256).
Both ``/metrics`` endpoints (the workers' health port, the gateway's metrics port; none on the
gateway's public port) must then show exactly those numbers.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from shared.adapters.broker import event_message
from shared.adapters.spool import LocalSpool
from shared.events import FileReceived, utcnow
from shared.topology import Topology
from tests.e2e.pipeline import Pipeline, free_port, queue_depths, start_pipeline

pytestmark = pytest.mark.integration

NAME = "t-obs-metrics"
FILES = 3

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (side % 256, 90, 160)).save(out, "PNG")
    return out.getvalue()


def scrape(url: str) -> Samples:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def health_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pipeline(
    services: object, tmp_path_factory: pytest.TempPathFactory, health_port: int
) -> Iterator[Pipeline]:
    yield from start_pipeline(
        tmp_path_factory.mktemp("metrics"),
        NAME,
        {"SLUICE_WORKER_HEALTH_PORT": str(health_port), "SLUICE_LOG_LEVEL": "warning"},
    )


async def fail_at_scan(pipeline: Pipeline) -> None:
    """Publish, straight to the scan queue, a body that is not an event and an event whose
    spooled bytes do not match its SHA-256."""
    spool = LocalSpool(pipeline.spool_dir)
    name = uuid.uuid4().hex
    async with spool.writer(name) as writer:
        await writer.write(b"these bytes are not what the event announces")
        await writer.commit()
    now = utcnow()
    mismatch = FileReceived(
        event_id=uuid.uuid4(),
        occurred_at=now,
        file_id=uuid.uuid4(),
        owner="alice",
        received_at=now,
        source=spool.reference(name),
        size_bytes=writer.size_bytes,
        sha256="0" * 64,
        content_type="image/png",
        original_name="mismatch.png",
    )
    garbage = aio_pika.Message(b"{not an event", message_id=str(uuid.uuid4()))
    await pipeline.publish_to_queue("scan", garbage, event_message(mismatch))


def wait_for(url: str, done: Any, timeout_s: float = 120) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(url)
        if done(samples):
            return samples
        assert time.monotonic() < deadline, "the run did not finish in time"
        time.sleep(0.3)


def test_metrics_count_exactly_what_the_run_did(pipeline: Pipeline, health_port: int) -> None:
    images = [png(40 + 8 * i) for i in range(FILES)]
    with pipeline.client() as client:
        for i, data in enumerate(images):
            answer = client.post("/v1/files", files={"file": (f"p{i}.png", data, "image/png")})
            assert answer.status_code == 202, answer.text
        refused = client.post("/v1/files", files={"file": ("x.png", b"plain text", "image/png")})
        assert refused.status_code == 415
    asyncio.run(fail_at_scan(pipeline))

    worker = f"http://127.0.0.1:{health_port}"
    handled = "sluice_messages_handled_total"
    samples = wait_for(
        worker,
        lambda s: (
            value(s, handled, stage="commit", outcome="acked") >= 4 * FILES + 1
            and value(s, handled, stage="scan", outcome="dead-lettered") >= 2
        ),
    )
    time.sleep(1)  # nothing more may come
    samples = scrape(worker)

    # commit: four events per file, and the file.dead_lettered of the mismatch (the garbage
    # body is about no file, so nothing announces it).
    per_stage = {"scan": FILES, "store": FILES, "thumbnail": FILES, "commit": 4 * FILES + 1}
    for stage, acked in per_stage.items():
        assert value(samples, handled, stage=stage, outcome="acked") == acked, stage
        failed = 2 if stage == "scan" else 0
        assert value(samples, handled, stage=stage, outcome="dead-lettered") == failed, stage
        assert value(samples, handled, stage=stage, outcome="retry") == 0, stage
        count = value(samples, "sluice_handling_duration_seconds_count", stage=stage)
        assert count == acked + failed, f"{stage}: histogram count is the handled count"
        assert value(samples, "sluice_retries_total", stage=stage) == 0
    for error in ("InvalidEvent", "ChecksumMismatch"):
        assert value(samples, "sluice_messages_failed_total", stage="scan", error_type=error) == 1
        assert value(samples, "sluice_dead_letters_total", stage="scan", error_type=error) == 1
    total = sum(len(data) for data in images)
    assert value(samples, "sluice_stored_bytes_total", stage="store") == total
    assert queue_depths(pipeline)[Topology(prefix=NAME).dead_letter_queue("scan")] == 2

    assert httpx.get(f"{pipeline.url}/metrics", timeout=10).status_code == 404  # not public
    gateway = scrape(pipeline.metrics_url)
    assert value(gateway, "sluice_uploads_total", outcome="accepted") == FILES
    assert value(gateway, "sluice_uploads_total", outcome="unsupported_type") == 1
    assert value(gateway, "sluice_upload_bytes_total") == total
    requests = "http_requests_total"
    posts = {"handler": "/v1/files", "method": "POST"}
    assert value(gateway, requests, status="2xx", **posts) == FILES
    assert value(gateway, requests, status="4xx", **posts) == 1
