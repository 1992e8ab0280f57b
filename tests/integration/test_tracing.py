"""One trace per file, across the gateway and every stage, against the real services.

The gateway (ASGI, in this process) and the scan, store, thumbnail and commit consumers with
their real handlers (``services.<stage>.main.build``) run in this test process on their own
names: AMQP prefix ``t_obs_trace``, database ``sluice_t_obs_trace``, bucket
``sluice-t-obs-trace``. Spans go to an in-memory exporter; the tests read them back per file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from PIL import Image

from services.gateway.app import create_app
from services.gateway.keys import create_key
from shared import runner
from shared.adapters import broker
from shared.adapters.spool import LocalSpool
from shared.adapters.storage import S3ObjectStorage
from shared.errors import SourceMissing, StorageUnavailable
from shared.events import BaseEvent, FileReceived, utcnow
from shared.ops.deadletters import Selection, replay
from shared.settings import (
    Settings,
    ThumbnailSettings,
    TracingSettings,
)
from shared.stage import Handler
from shared.telemetry import tracing
from shared.telemetry.logging import MASK
from shared.topology import Topology
from tests.localenv import FreshDatabase, Local

pytestmark = pytest.mark.integration

PREFIX = "t_obs_trace"
DATABASE = "sluice_t_obs_trace"
BUCKET = "sluice-t-obs-trace"
STAGES = ("scan", "store", "thumbnail", "commit")
FINAL = {"available", "rejected"}
FAIL_ONCE = "fail-once-"
DEAD_ONCE = "dead-once-"


@dataclass
class Pipeline:
    settings: Settings
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    publisher: broker.Publisher
    spans: InMemorySpanExporter


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


def failing_once(
    handle: Handler, prefix: str, error: Callable[[], Exception]
) -> Callable[[BaseEvent], Awaitable[Sequence[BaseEvent]]]:
    """``handle``, except that its first call for a file whose name starts with ``prefix``
    raises ``error()``."""
    failed: set[str] = set()

    async def flaky(event: BaseEvent) -> Sequence[BaseEvent]:
        if event.original_name.startswith(prefix) and str(event.file_id) not in failed:
            failed.add(str(event.file_id))
            raise error()
        return await handle(event)

    return flaky


#: Per stage, how its handler fails once on purpose: the thumbnail stage with a retryable
#: error (retried), the scan stage with a permanent one (dead-lettered, for a replay).
INJECTED = {
    "thumbnail": (FAIL_ONCE, lambda: StorageUnavailable("injected: S3 timed out once")),
    "scan": (DEAD_ONCE, lambda: SourceMissing("injected: the source was not there yet")),
}


@pytest.fixture(scope="module")
async def pipeline(
    local: Local, fresh_database: FreshDatabase, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    """The gateway and the four stages of ``t_obs_trace``, tracing into memory."""
    settings = local.settings(
        tmp_path_factory.mktemp("spool"),
        amqp=local.amqp(PREFIX, retry_base_delay_s=0.05, retry_max_delay_s=0.2),
        database=local.database(DATABASE),
        s3=local.s3(BUCKET, timeout_s=10.0),
        thumbnail=ThumbnailSettings(sizes_px=(64,)),
    )
    tracing.configure(TracingSettings(traces_exporter="none"), "sluice-test")
    spans = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    await fresh_database(DATABASE)
    async with S3ObjectStorage(settings.s3) as storage:
        await storage.ensure_bucket()
    topology = Topology.of(settings.amqp)
    connection = await broker.connect(settings.amqp)
    channel = await connection.channel()
    await topology.delete(channel)
    publisher = await broker.Publisher.create(connection, settings.amqp, topology)
    stages = [
        await importlib.import_module(f"services.{name}.main").build(settings) for name in STAGES
    ]
    stages = [
        dataclasses.replace(s, handle=failing_once(s.handle, *INJECTED[s.name]))
        if s.name in INJECTED
        else s
        for s in stages
    ]
    stop = asyncio.Event()
    consumers = asyncio.create_task(runner.run_until_stopped(stages, settings.amqp, topology, stop))
    pool = await asyncpg.create_pool(settings.database.url, min_size=1, max_size=2)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield Pipeline(settings, client, pool, publisher, spans)
    finally:
        stop.set()
        await consumers
        await pool.close()
        await topology.delete(channel)
        await connection.close()


async def upload(pipeline: Pipeline, data: bytes, name: str = "photo.png") -> str:
    key = await create_key(pipeline.pool, "alice")
    answer = await pipeline.client.post(
        "/v1/files",
        files={"file": (name, data, "image/png")},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 202, answer.text
    file_id: str = answer.json()["file_id"]
    return file_id


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


async def wait_committed(pipeline: Pipeline, file_id: str) -> list[ReadableSpan]:
    """Wait for the file's final status and the commit span of its ``file.thumbnailed``;
    every finished span of the file's trace(s)."""

    async def final() -> bool:
        status = await pipeline.pool.fetchval(
            "SELECT status FROM file_versions WHERE file_id = $1", uuid.UUID(file_id)
        )
        return status in FINAL

    def commit_spans() -> list[ReadableSpan]:
        return [
            s
            for s in file_spans(pipeline, file_id)
            if s.name == f"{PREFIX}.commit process"
            and s.attributes
            and s.attributes.get("sluice.event_type") == "file.thumbnailed"
        ]

    async def thumbnailed_committed() -> bool:
        return bool(commit_spans())

    await wait_until(final, f"{file_id} final")
    await wait_until(thumbnailed_committed, f"commit span of {file_id}")
    trace_ids = {s.context.trace_id for s in file_spans(pipeline, file_id) if s.context}
    return [s for s in pipeline.spans.get_finished_spans() if s.context.trace_id in trace_ids]


def file_spans(pipeline: Pipeline, file_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in pipeline.spans.get_finished_spans()
        if s.attributes and s.attributes.get("sluice.file_id") == file_id
    ]


def consumer_spans(spans: list[ReadableSpan], stage: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == f"{PREFIX}.{stage} process"]


def assert_one_trace_through_every_stage(spans: list[ReadableSpan]) -> int:
    trace_ids = {s.context.trace_id for s in spans if s.context}
    assert len(trace_ids) == 1, f"{len(trace_ids)} traces: {sorted(s.name for s in spans)}"
    for stage in STAGES:
        found = consumer_spans(spans, stage)
        assert found, f"no {stage} span in {sorted({s.name for s in spans})}"
        for span in found:
            assert span.kind is SpanKind.CONSUMER
            assert span.attributes is not None
            assert span.attributes["messaging.system"] == "rabbitmq"
            assert span.attributes["messaging.destination.name"] == f"{PREFIX}.{stage}"
            assert span.attributes["messaging.operation.type"] == "process"
    names = {s.name for s in spans}
    assert "clamd INSTREAM" in names
    assert {"S3.HeadObject", "S3.PutObject", "S3.GetObject"} <= names
    postgres = [s for s in spans if s.attributes and s.attributes.get("db.system") == "postgresql"]
    assert any(s.name == "INSERT" for s in postgres), sorted(s.name for s in postgres)
    return trace_ids.pop()


async def test_an_upload_is_one_trace_from_the_gateway_through_every_stage(
    pipeline: Pipeline,
) -> None:
    file_id = await upload(pipeline, png())
    spans = await wait_committed(pipeline, file_id)
    trace_id = assert_one_trace_through_every_stage(spans)
    (root,) = [s for s in spans if s.parent is None]
    assert root.kind is SpanKind.SERVER and root.name == "POST /v1/files"
    (received,) = [
        s for s in spans if s.name == f"{PREFIX}.events publish" and s.parent == root.context
    ]
    assert received.kind is SpanKind.PRODUCER
    (scan,) = consumer_spans(spans, "scan")
    assert scan.parent is not None and scan.parent.span_id == received.context.span_id
    assert trace_id == root.context.trace_id


async def test_an_upstream_event_without_traceparent_starts_its_trace_at_scan(
    pipeline: Pipeline,
) -> None:
    data = png()
    spool = LocalSpool(pipeline.settings.spool.dir)
    name = uuid.uuid4().hex
    async with spool.writer(name) as writer:
        await writer.write(data)
        await writer.commit()
    now = utcnow()
    event = FileReceived(
        event_id=uuid.uuid4(),
        occurred_at=now,
        file_id=uuid.uuid4(),
        owner="upstream",
        received_at=now,
        source=spool.reference(name),
        size_bytes=len(data),
        sha256=writer.sha256,
        content_type="image/png",
        original_name="from-upstream.png",
    )
    await pipeline.publisher.publish(event)  # no headers: an upstream service that does not trace
    spans = await wait_committed(pipeline, str(event.file_id))
    trace_id = assert_one_trace_through_every_stage(spans)
    assert trace_id == event.file_id.int, "an untraced file's trace id is its file id"
    (scan,) = consumer_spans(spans, "scan")
    assert scan.parent is None, "the scan span starts the trace"


async def test_a_retry_continues_the_same_trace(pipeline: Pipeline) -> None:
    file_id = await upload(pipeline, png(), name=f"{FAIL_ONCE}photo.png")
    spans = await wait_committed(pipeline, file_id)
    assert_one_trace_through_every_stage(spans)
    first, second = sorted(consumer_spans(spans, "thumbnail"), key=lambda s: s.start_time or 0)
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None and first.attributes["sluice.outcome"] == "retry"
    assert any(e.name == "exception" for e in first.events)
    assert second.attributes is not None and second.attributes["sluice.attempt"] == 2
    assert second.attributes["sluice.outcome"] == "acked"
    assert second.parent is not None and second.parent.span_id == first.context.span_id


async def test_a_dead_letter_replayed_continues_the_same_trace(pipeline: Pipeline) -> None:
    file_id = await upload(pipeline, png(), name=f"{DEAD_ONCE}photo.png")
    connection = await broker.connect(pipeline.settings.amqp)
    topology = Topology.of(pipeline.settings.amqp)
    selection = Selection(stages=("scan",), file_id=file_id)
    try:

        async def dead_lettered() -> bool:
            found = await replay(
                connection, topology, selection, settings=pipeline.settings.amqp, dry_run=True
            )
            return found.message_ids != ()

        await wait_until(dead_lettered, f"{file_id} in the scan dead-letter queue")
        result = await replay(connection, topology, selection, settings=pipeline.settings.amqp)
        assert result.replayed == 1
    finally:
        await connection.close()

    spans = await wait_committed(pipeline, file_id)
    assert_one_trace_through_every_stage(spans)
    dead, replayed = sorted(consumer_spans(spans, "scan"), key=lambda s: s.start_time or 0)
    assert dead.attributes is not None and dead.attributes["sluice.outcome"] == "dead-lettered"
    assert dead.status.status_code is StatusCode.ERROR
    assert replayed.attributes is not None and replayed.attributes["sluice.outcome"] == "acked"
    assert replayed.parent is not None and replayed.parent.span_id == dead.context.span_id


async def test_an_api_key_pasted_into_a_url_is_masked_in_the_request_span(
    pipeline: Pipeline,
) -> None:
    key = await create_key(pipeline.pool, "alice")
    answer = await pipeline.client.get(
        f"/v1/files/{key}", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code in (404, 422)
    servers = [
        s
        for s in pipeline.spans.get_finished_spans()
        if s.kind is SpanKind.SERVER and "/v1/files/slk_" in str(s.attributes)
    ]
    assert servers, "no request span for the pasted key"
    for span in servers:
        assert key not in str(span.attributes), span.attributes
        assert f"/v1/files/slk_{MASK}" in str(span.attributes)
