"""A stage whose source is gone because the file was deleted while its event was in flight
drops the message; for any other file a missing source is dead-lettered as before
(``shared.runner``, docs/gdpr.md). Real RabbitMQ (prefix ``t_deleted_in_flight_*``) and a
real, migrated PostgreSQL database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from shared.adapters.db import DeletedFileReader
from shared.erasure import owner_digest
from shared.errors import SourceMissing
from shared.events import BaseEvent, FileReceived, parse_event
from shared.runner import StageConsumer
from shared.settings import DatabaseSettings
from shared.stage import Stage
from tests.integration.dlq_support import Broker, fresh_broker, received, wait_for
from tests.localenv import FreshDatabase

pytestmark = pytest.mark.integration

DATABASE = "sluice_t_deleted_in_flight"


@pytest.fixture
async def b(services: Any, prefix: str) -> AsyncIterator[Broker]:
    async with fresh_broker(prefix) as fresh:
        yield fresh


@pytest.fixture
async def database(fresh_database: FreshDatabase) -> DatabaseSettings:
    return await fresh_database(DATABASE)


async def test_a_deleted_or_erased_files_missing_source_is_dropped_not_dead_lettered(
    b: Broker, database: DatabaseSettings
) -> None:
    tombstoned = received("alice")  # DELETE answered 202; the commit stage has not caught up
    deleted = received("alice")  # the commit stage recorded the deletion
    erased = received("carol")  # its owner was erased after it was received
    erased_before = received("dave")  # received again after its owner's erasure: not forgotten
    alive = received("bob")  # nobody deleted it: its missing source is a fault to look at
    connection = await asyncpg.connect(database.url)
    try:
        await connection.execute(
            "INSERT INTO file_deletions (file_id, owner, event_id) VALUES ($1, 'alice', $2)",
            tombstoned.file_id,
            uuid.uuid4(),
        )
        await connection.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, status,"
            " current_version, received_at) VALUES ($1, 'alice', '', 'image/png', 'deleted', 1,"
            " $2)",
            deleted.file_id,
            deleted.received_at,
        )
        for event, started in (
            (erased, erased.received_at + timedelta(seconds=1)),
            (erased_before, erased_before.received_at - timedelta(days=1)),
        ):
            await connection.execute(
                "INSERT INTO gdpr_erasures (erasure_id, owner_sha256, requested_by, started_at)"
                " VALUES ($1, $2, 'test', $3)",
                uuid.uuid4(),
                owner_digest(event.owner),
                started,
            )
    finally:
        await connection.close()

    handled: list[uuid.UUID] = []

    async def source_gone(event: BaseEvent) -> list[BaseEvent]:
        handled.append(event.file_id)
        raise SourceMissing("spooled file is gone", file_id=str(event.file_id))

    reader = DeletedFileReader(database)
    consumer = StageConsumer(Stage("scan", source_gone, deleted=reader), b.amqp, b.topology)
    await consumer.start()
    events: list[FileReceived] = [tombstoned, deleted, erased, erased_before, alive]
    try:
        publisher = await b.publisher()
        for event in events:
            await publisher.publish(event)
        dlq = b.topology.dead_letter_queue("scan")

        async def settled() -> bool:
            return (
                len(handled) == len(events)
                and await b.depth(b.topology.queue("scan")) == 0
                and await b.depth(dlq) == 2
            )

        await wait_for(settled)
        letters = await b.drain(dlq)
    finally:
        await consumer.stop()
        await reader.close()
    dead_lettered = {parse_event(m.body).file_id for m in letters}
    print(
        f"[deleted in flight] published={len(events)} dropped={len(events) - len(letters)}"
        f" dead_lettered={len(letters)}"
    )
    assert dead_lettered == {alive.file_id, erased_before.file_id}
    assert sorted(handled) == sorted(event.file_id for event in events)  # each handled once
