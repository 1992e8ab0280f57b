"""The fallback worker against the real PostgreSQL (database ``sluice_test_fallback``) and
SeaweedFS: keeping a dead letter Base64, refusing what it must not keep, and migrating rows
back to S3 exactly once, across a lost confirm, concurrent workers and damaged rows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id

from services.fallback import migrator
from services.fallback.handler import Deps, handle
from services.fallback.main import build
from services.fallback.repository import FallbackRepository
from shared.adapters import broker
from shared.adapters.db import create_pool
from shared.adapters.sources import SpoolOrS3SourceReader
from shared.adapters.spool import LocalSpool
from shared.adapters.storage import S3ObjectStorage
from shared.errors import BrokerUnavailable, ChecksumMismatch
from shared.events import (
    BaseEvent,
    FileDeferred,
    FileFallback,
    FileScanned,
    FileStored,
    parse_event,
)
from shared.retry import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_FIRST_FAILED_AT,
    HEADER_STAGE,
    FailureHistory,
    failure_headers,
)
from shared.runner import StageConsumer
from shared.settings import (
    ClamdSettings,
    DatabaseSettings,
    FallbackSettings,
    GatewaySettings,
    LogSettings,
    Settings,
    SpoolSettings,
    ThumbnailSettings,
    TracingSettings,
)
from shared.stage import Refusal
from shared.telemetry import tracing
from shared.topology import FALLBACK_ROUTE
from tests.e2e.pipeline import ROOT, free_port
from tests.integration.dlq_support import fresh_broker, wait_for
from tests.integration.test_store import s3_settings, scanned, spooled
from tests.localenv import FreshDatabase, Local

pytestmark = pytest.mark.integration

BUCKET = "sluice-test-fallback"
PHOTO = (ROOT / "samples" / "photo-rotated.jpg").read_bytes()
NEVER_FAILED = FailureHistory()


@pytest.fixture(scope="module")
async def database(fresh_database: FreshDatabase) -> DatabaseSettings:
    """A fresh ``sluice_test_fallback`` database at the current schema."""
    return await fresh_database("sluice_test_fallback")


@pytest.fixture(scope="module")
async def pool(database: DatabaseSettings) -> AsyncIterator[Any]:
    pool = await create_pool(database)
    yield pool
    await pool.close()


@pytest.fixture
async def repository(pool: Any) -> FallbackRepository:
    await pool.execute("DELETE FROM fallback_blobs")
    return FallbackRepository(pool)


@pytest.fixture
async def storage(local: Local) -> AsyncIterator[S3ObjectStorage]:
    async with S3ObjectStorage(s3_settings(local, bucket_name=BUCKET)) as opened:
        await opened.ensure_bucket()
        yield opened


@pytest.fixture
def spool(tmp_path: Path) -> LocalSpool:
    return LocalSpool(tmp_path / "spool")


@pytest.fixture
def store_failure() -> FailureHistory:
    """The failure history of a store dead letter, as the run loop hands it to the handler."""
    return FailureHistory(
        stage="store",
        attempts=3,
        error_type="StorageUnavailable",
        error_message="S3 unavailable: connection refused",
    )


def deps_for(spool: LocalSpool, storage: S3ObjectStorage, repository: Any, cap: int) -> Deps:
    return Deps(sources=SpoolOrS3SourceReader(spool, storage), repository=repository, max_bytes=cap)


class Published:
    """A ``publish`` that records events; ``fail_first`` times it raises as a lost confirm."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.events: list[BaseEvent] = []
        self.fail_first = fail_first
        self.delay_s = delay_s

    async def __call__(self, event: BaseEvent) -> None:
        await asyncio.sleep(self.delay_s)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise BrokerUnavailable("publish not confirmed: connection lost")
        self.events.append(event)


def migration(repository: Any, storage: S3ObjectStorage, publish: Published) -> migrator.Deps:
    return migrator.Deps(
        repository=repository,
        storage=storage,
        publish=publish,
        multipart_threshold_bytes=storage.settings.multipart_threshold_bytes,
    )


async def kept(
    spool: LocalSpool,
    storage: S3ObjectStorage,
    repository: Any,
    data: bytes = PHOTO,
    history: FailureHistory = NEVER_FAILED,
) -> FileScanned:
    event = scanned(data, await spooled(spool, data))
    await handle(event, history, deps_for(spool, storage, repository, 10 * 1024 * 1024))
    return event


async def rows(pool: Any) -> list[Any]:
    return list(await pool.fetch("SELECT * FROM fallback_blobs ORDER BY created_at"))


async def test_dead_letter_is_kept_base64_and_announced(
    pool: Any,
    repository: Any,
    spool: LocalSpool,
    storage: S3ObjectStorage,
    store_failure: FailureHistory,
) -> None:
    event = scanned(PHOTO, await spooled(spool, PHOTO))
    deps = deps_for(spool, storage, repository, 10 * 1024 * 1024)

    [out] = await handle(event, store_failure, deps)
    [again] = await handle(event, store_failure, deps)  # a redelivery

    assert isinstance(out, FileFallback) and again.event_id == out.event_id
    assert out.causation_id == event.event_id
    assert out.reason == ("StorageUnavailable after 3 attempts: S3 unavailable: connection refused")
    [row] = await rows(pool)
    assert base64.b64decode(row["data_base64"]) == PHOTO
    assert (row["file_id"], row["version_number"]) == (event.file_id, 1)
    assert (row["size_bytes"], row["sha256"]) == (len(PHOTO), event.sha256)
    assert row["event"] == event.model_dump(mode="json")
    assert row["reason"] == out.reason


async def test_over_the_cap_is_deferred_and_kept_nowhere(
    pool: Any,
    repository: Any,
    spool: LocalSpool,
    storage: S3ObjectStorage,
    store_failure: FailureHistory,
) -> None:
    event = scanned(PHOTO, await spooled(spool, PHOTO))
    refused = await handle(
        event, store_failure, deps_for(spool, storage, repository, len(PHOTO) - 1)
    )

    assert isinstance(refused, Refusal)
    [deferred] = refused.events
    assert isinstance(deferred, FileDeferred) and deferred.causation_id == event.event_id
    assert f"{len(PHOTO)} bytes is over the fallback's {len(PHOTO) - 1}-byte cap" in (
        deferred.reason
    )
    assert await rows(pool) == []


async def test_source_that_is_not_the_file_is_refused(
    pool: Any,
    repository: Any,
    spool: LocalSpool,
    storage: S3ObjectStorage,
    store_failure: FailureHistory,
) -> None:
    event = scanned(PHOTO, await spooled(spool, PHOTO[:-1] + b"\x00"))
    with pytest.raises(ChecksumMismatch):
        await handle(event, store_failure, deps_for(spool, storage, repository, 10 * 1024 * 1024))
    assert await rows(pool) == []


async def test_through_the_run_loop_kept_or_deferred_to_the_store_dead_letter_queue(
    pool: Any,
    database: DatabaseSettings,
    repository: Any,
    spool: LocalSpool,
    storage: S3ObjectStorage,
    tmp_path: Path,
) -> None:
    small = b"a small file"
    async with fresh_broker("t_fallback_loop") as b:
        settings = Settings(
            amqp=b.amqp,
            s3=storage.settings,
            database=database,
            spool=SpoolSettings(dir=tmp_path / "spool"),
            clamd=ClamdSettings(),
            gateway=GatewaySettings(),
            thumbnail=ThumbnailSettings(),
            log=LogSettings(),
            fallback=FallbackSettings(max_bytes=len(PHOTO) - 1),
        )
        consumer = StageConsumer(await build(settings), b.amqp, b.topology)
        publisher = await b.publisher()
        await consumer.start()
        try:
            kept_event = scanned(small, await spooled(spool, small))
            too_big = scanned(PHOTO, await spooled(spool, PHOTO))
            store_gave_up = failure_headers(
                {},
                stage="store",
                error_type="StorageUnavailable",
                error_message="S3 unavailable: connection refused",
                attempts=3,
            )
            for event in (kept_event, too_big):  # as the store stage's run loop hands them on
                message = broker.event_message(event, store_gave_up)
                await publisher.publish_to_exchange(
                    b.topology.dead_letter_exchange, FALLBACK_ROUTE, message
                )

            async def both_answered() -> bool:
                return await b.depth(b.topology.queue("commit")) == 2

            await wait_for(both_answered)
            answers = {
                type(event): event
                for event in (
                    parse_event(message.body)
                    for message in await b.drain(b.topology.queue("commit"))
                )
            }
            [dead] = await b.drain(b.topology.dead_letter_queue("store"))
        finally:
            await consumer.stop()

    fallback, deferred = answers[FileFallback], answers[FileDeferred]
    assert fallback.causation_id == kept_event.event_id
    assert (
        fallback.reason == "StorageUnavailable after 3 attempts: S3 unavailable: connection refused"
    )
    [row] = await rows(pool)
    assert row["file_id"] == kept_event.file_id

    assert deferred.causation_id == too_big.event_id
    assert f"{len(PHOTO)} bytes is over the fallback's {len(PHOTO) - 1}-byte cap" in deferred.reason
    assert parse_event(dead.body) == too_big
    headers = dead.headers or {}
    assert (headers[HEADER_STAGE], headers[HEADER_ERROR_TYPE], headers[HEADER_ATTEMPTS]) == (
        "fallback",
        "FallbackRefused",
        1,
    )
    assert headers[HEADER_ERROR_MESSAGE].endswith(f"(file_id={too_big.file_id})")
    assert headers[HEADER_FIRST_FAILED_AT] == store_gave_up[HEADER_FIRST_FAILED_AT]


async def test_migration_stores_verifies_publishes_then_deletes(
    pool: Any, repository: Any, spool: LocalSpool, storage: S3ObjectStorage, raw_s3: Any
) -> None:
    event = await kept(spool, storage, repository)
    publish = Published()

    report = await migrator.migrate_batch(migration(repository, storage, publish), 10)

    assert (report.migrated, report.failed, report.stopped) == (1, 0, None)
    [stored] = publish.events
    assert isinstance(stored, FileStored)
    # The very event the store stage would have emitted: commit and thumbnail go on as usual.
    assert stored.event_id == event.follow(FileStored, bucket=BUCKET, key=stored.key).event_id
    body = raw_s3.get_object(Bucket=BUCKET, Key=stored.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == event.sha256
    assert await rows(pool) == []


async def test_migration_continues_the_trace_the_row_was_kept_in(
    pool: Any,
    repository: Any,
    spool: LocalSpool,
    storage: S3ObjectStorage,
    store_failure: FailureHistory,
) -> None:
    tracing.configure(TracingSettings(traces_exporter="none"), "sluice-test")
    spans = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    with tracing.file_span("fallback consumer (test)", uuid.uuid4()) as kept_in:
        event = await kept(spool, storage, repository, history=store_failure)
    [row] = await rows(pool)
    trace_id = format_trace_id(kept_in.get_span_context().trace_id)
    assert row["trace_context"]["traceparent"].split("-")[1] == trace_id

    publish = Published()
    await migrator.migrate_batch(migration(repository, storage, publish), 10)

    [migrate] = [span for span in spans.get_finished_spans() if span.name == "fallback migrate"]
    assert migrate.context is not None and migrate.parent is not None
    assert format_trace_id(migrate.context.trace_id) == trace_id  # not the file id's trace
    assert trace_id != event.file_id.hex
    assert migrate.parent.span_id == kept_in.get_span_context().span_id


async def test_lost_confirm_keeps_the_row_and_the_retry_publishes_the_same_event(
    pool: Any, repository: Any, spool: LocalSpool, storage: S3ObjectStorage, raw_s3: Any
) -> None:
    event = await kept(spool, storage, repository)
    publish = Published(fail_first=1)
    deps = migration(repository, storage, publish)

    first = await migrator.migrate_batch(deps, 10)
    assert first.migrated == 0 and "BrokerUnavailable" in str(first.stopped)
    assert len(await rows(pool)) == 1  # S3 has the bytes, the broker not the event: row stays

    second = await migrator.migrate_batch(deps, 10)
    assert second.migrated == 1
    [stored] = publish.events
    assert stored.event_id == event.follow(FileStored, bucket=BUCKET, key=stored.key).event_id
    listed = raw_s3.list_objects_v2(Bucket=BUCKET, Prefix=f"alice/{event.file_id}")
    assert [item["Key"] for item in listed["Contents"]] == [stored.key]
    assert await rows(pool) == []


async def test_concurrent_migrators_migrate_each_row_once(
    pool: Any, repository: Any, spool: LocalSpool, storage: S3ObjectStorage
) -> None:
    events = [await kept(spool, storage, repository, PHOTO + bytes([i])) for i in range(12)]
    publish = Published(delay_s=0.02)
    deps = migration(repository, storage, publish)

    reports = await asyncio.gather(*(migrator.migrate_batch(deps, 12) for _ in range(3)))

    assert sum(r.migrated for r in reports) == 12
    assert sorted(e.file_id for e in publish.events) == sorted(e.file_id for e in events)
    assert await rows(pool) == []


async def test_damaged_row_keeps_its_error_and_the_batch_goes_on(
    pool: Any, repository: Any, spool: LocalSpool, storage: S3ObjectStorage
) -> None:
    damaged = await kept(spool, storage, repository, PHOTO + b"damaged")
    healthy = await kept(spool, storage, repository, PHOTO + b"healthy")
    await pool.execute(
        "UPDATE fallback_blobs SET data_base64 = $2 WHERE file_id = $1",
        damaged.file_id,
        base64.b64encode(b"something else").decode(),
    )
    publish = Published()

    report = await migrator.migrate_batch(migration(repository, storage, publish), 10)

    assert (report.migrated, report.failed) == (1, 1)
    assert [e.file_id for e in publish.events] == [healthy.file_id]
    [row] = await rows(pool)
    assert row["file_id"] == damaged.file_id and row["migration_attempts"] == 1
    assert "do not match their SHA-256" in row["last_error"]
    # A row that failed goes to the back of the next batch.
    again = await kept(spool, storage, repository, PHOTO + b"later")
    assert (await repository.oldest(1))[0][0] == again.file_id


async def test_s3_down_stops_the_batch_and_keeps_every_row(
    pool: Any, repository: Any, spool: LocalSpool, storage: S3ObjectStorage, local: Local
) -> None:
    await kept(spool, storage, repository)
    await kept(spool, storage, repository, PHOTO + b"2")
    dead = s3_settings(
        local, bucket_name=BUCKET, endpoint=f"http://127.0.0.1:{free_port()}", timeout_s=2.0
    )
    publish = Published()
    async with S3ObjectStorage(dead) as down:
        report = await migrator.migrate_batch(migration(repository, down, publish), 10)

    assert report.migrated == 0 and "StorageUnavailable" in str(report.stopped)
    assert publish.events == []
    assert [row["migration_attempts"] for row in await rows(pool)] == [0, 0]


async def test_fallback_status_command_lists_oldest_first(
    pool: Any,
    database: DatabaseSettings,
    repository: Any,
    spool: LocalSpool,
    storage: S3ObjectStorage,
    store_failure: FailureHistory,
) -> None:
    first = await kept(spool, storage, repository, history=store_failure)
    second = await kept(spool, storage, repository, PHOTO + b"x", history=store_failure)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services", "fallback", "status", "--json"],
        env={**os.environ, "SLUICE_DATABASE_URL": database.url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["versions"], status["bytes"]) == (2, 2 * len(PHOTO) + 1)
    assert status["stored_bytes"] > 0
    assert [e["file_id"] for e in status["entries"]] == [str(first.file_id), str(second.file_id)]
    assert status["entries"][0]["reason"].startswith("StorageUnavailable after 3 attempts")


async def test_gauges_count_fallback_rows_bytes_and_corrupted_versions(
    pool: Any, repository: Any, spool: LocalSpool, storage: S3ObjectStorage
) -> None:
    await kept(spool, storage, repository)
    await kept(spool, storage, repository, PHOTO + b"x")
    lost = uuid.uuid4()
    await pool.execute(
        "INSERT INTO files (file_id, owner, original_name, content_type, status, received_at)"
        " VALUES ($1, 'alice', 'lost.jpg', 'image/jpeg', 'corrupted', now())",
        lost,
    )
    await pool.execute(
        "INSERT INTO file_versions (file_id, version_number, status, size_bytes, sha256, source)"
        " VALUES ($1, 1, 'corrupted', 1, $2, 'spool://lost')",
        lost,
        "0" * 64,
    )

    summary = await migrator.publish_gauges(repository)

    def value(name: str) -> float | None:
        return prometheus_client.REGISTRY.get_sample_value(name)

    assert summary.versions == 2
    assert value("sluice_fallback_versions") == 2
    assert value("sluice_fallback_bytes") == 2 * len(PHOTO) + 1
    assert (value("sluice_fallback_table_bytes") or 0) > 0
    assert (value("sluice_fallback_oldest_age_seconds") or -1) >= 0
    corrupted = await pool.fetchval("SELECT count(*) FROM file_versions WHERE status = 'corrupted'")
    assert value("sluice_corrupted_versions") == corrupted


async def test_rows_are_sealed_with_aes_gcm_and_old_keys_and_plain_rows_stay_readable(
    pool: Any, repository: Any, spool: LocalSpool, storage: S3ObjectStorage, raw_s3: Any
) -> None:
    """SLUICE_FALLBACK_ENCRYPTION_*: a row kept with key k1 holds no Base64 of the photo; after
    a rotation to k2 (k1 kept) it and a plain row written before still migrate byte for byte,
    and the gateway's read opens it; a row moved onto another file's id does not open."""
    from services.gateway.repo import fetch_fallback_bytes
    from shared.adapters.row_cipher import RowCipher
    from shared.settings import FallbackSettings

    keys = {name: base64.b64encode(os.urandom(32)).decode() for name in ("k1", "k2")}

    def cipher(current: str, *names: str) -> RowCipher:
        held = json.dumps({name: keys[name] for name in names})
        return RowCipher.from_settings(
            FallbackSettings(encryption_keys=held, encryption_key_id=current)
        )

    plain = await kept(spool, storage, repository, PHOTO + b"plain")  # written before
    k1 = cipher("k1", "k1")
    sealed = scanned(PHOTO, await spooled(spool, PHOTO))
    deps = deps_for(spool, storage, repository, 10 * 1024 * 1024)
    await handle(sealed, NEVER_FAILED, Deps(deps.sources, deps.repository, deps.max_bytes, k1))
    texts = {row["file_id"]: row["data_base64"] for row in await rows(pool)}
    assert texts[sealed.file_id].startswith("aesgcm:k1:")
    assert base64.b64encode(PHOTO[:3000]).decode()[:3000] not in texts[sealed.file_id]
    assert base64.b64decode(texts[plain.file_id]) == PHOTO + b"plain"

    served = await fetch_fallback_bytes(pool, sealed.file_id, 1, sealed.owner, k1)
    assert served == PHOTO
    with pytest.raises(ChecksumMismatch, match="does not open"):
        k1.open(texts[sealed.file_id], file_id=plain.file_id, version_number=1, sha256=plain.sha256)

    rotated = cipher("k2", "k1", "k2")
    publish = Published()
    plain_deps = migration(repository, storage, publish)
    deps_m = migrator.Deps(
        plain_deps.repository,
        plain_deps.storage,
        publish,
        plain_deps.multipart_threshold_bytes,
        rotated,
    )
    report = await migrator.migrate_batch(deps_m, 10)
    assert (report.migrated, report.failed) == (2, 0)
    by_file = {event.file_id: event for event in publish.events}
    for event, data in ((sealed, PHOTO), (plain, PHOTO + b"plain")):
        stored = by_file[event.file_id]
        assert isinstance(stored, FileStored)
        body = raw_s3.get_object(Bucket=BUCKET, Key=stored.key)["Body"].read()
        assert body == data
    assert await rows(pool) == []
