"""No file waits in a dead-letter queue unseen: the real run loop, commit stage, PostgreSQL
(database ``sluice_test_attention``) and RabbitMQ.

The hardest case is the commit stage itself failing: PostgreSQL is made to refuse one file's
``available`` row (a trigger raising, as a bad constraint or a bug would), the commit stage
retries, dead-letters the ``file.thumbnailed``, and its ``file.dead_lettered`` notice is recorded
by the same commit stage, so the file's API status says what failed and where. Once the fault is
fixed (the trigger dropped), replaying the dead letter makes the file ``available`` and the
attention goes away.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.commit.main import build
from services.gateway.files import _summary
from services.gateway.repo import fetch_file
from services.gateway.schemas import FileSummary
from shared.adapters import broker
from shared.adapters.db import create_pool
from shared.events import FileReceived, FileScanned, FileStored, FileThumbnailed
from shared.naming import object_key
from shared.ops.deadletters import Selection, replay
from shared.runner import StageConsumer
from shared.settings import (
    AmqpSettings,
    ClamdSettings,
    DatabaseSettings,
    GatewaySettings,
    LogSettings,
    S3Settings,
    Settings,
    SpoolSettings,
    ThumbnailSettings,
)
from shared.status import FileStatus
from shared.topology import Topology
from tests.databases import fresh_database

pytestmark = pytest.mark.integration

NAME = "sluice_test_attention"
DATABASE = DatabaseSettings(url=f"postgresql://postgres@127.0.0.1:5432/{NAME}")
PREFIX = f"t_attention_{uuid.uuid4().hex[:8]}"
ROOT = Path(__file__).resolve().parents[2]

REFUSE_ONE_FILE = """
CREATE FUNCTION refuse_available() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'available' AND NEW.file_id = '{file_id}'::uuid THEN
        RAISE EXCEPTION 'refused for the test: file {file_id} may not become available';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_available BEFORE INSERT OR UPDATE ON file_versions
    FOR EACH ROW EXECUTE FUNCTION refuse_available();
"""


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[Any]:
    await asyncio.to_thread(fresh_database, NAME)
    pool = await create_pool(DATABASE)
    yield pool
    await pool.close()


async def until(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (value := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {check.__name__}")
        await asyncio.sleep(0.05)
    return value


async def doctor(*args: str) -> tuple[int, dict[str, Any]]:
    """``sluice doctor --json --older-than 1h`` on the test database: exit code, document."""
    env = {**os.environ, "SLUICE_DATABASE_URL": DATABASE.url, "SLUICE_LOG_LEVEL": "warning"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "doctor", "--json", "--older-than", "1h", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None, err
    return process.returncode, json.loads(out)


async def test_doctor_lists_a_file_not_final_long_after_it_was_received(pool: Any) -> None:
    late = FileReceived.new(
        file_id=uuid.uuid4(),
        owner="bob",
        source="spool://late.bin",
        size_bytes=1,
        sha256=hashlib.sha256(b"x").hexdigest(),
        content_type="image/png",
        original_name="late.png",
    )
    fresh = late.model_copy(update={"file_id": uuid.uuid4(), "event_id": uuid.uuid4()})
    late = late.model_copy(update={"received_at": late.received_at - timedelta(hours=2)})
    for event in (late, fresh):
        await pool.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, status,"
            " received_at) VALUES ($1, $2, $3, $4, 'received', $5)",
            event.file_id, event.owner, event.original_name, event.content_type,
            event.received_at,
        )  # fmt: skip
    try:
        code, report = await doctor()
        assert code == 1
        assert [(s["file_id"], s["status"]) for s in report["stuck"]] == [
            (str(late.file_id), "received")
        ]
        assert report["stuck"][0]["where"].startswith("expected in the scan stage's queue")
        assert report["stuck"][0]["age_s"] >= 7200
    finally:
        await pool.execute(
            "DELETE FROM files WHERE file_id = ANY($1::uuid[])", [late.file_id, fresh.file_id]
        )


async def test_a_commit_dead_letter_shows_on_the_file_and_a_replay_clears_it(
    pool: Any, tmp_path: Path
) -> None:
    amqp = AmqpSettings(prefix=PREFIX, retry_base_delay_s=0.05, retry_max_delay_s=0.1)
    topology = Topology.of(amqp)
    settings = Settings(
        amqp=amqp,
        s3=S3Settings(),
        database=DATABASE,
        spool=SpoolSettings(dir=tmp_path / "spool"),
        clamd=ClamdSettings(),
        gateway=GatewaySettings(),
        thumbnail=ThumbnailSettings(),
        log=LogSettings(),
    )
    connection = await broker.connect(amqp)
    channel = await connection.channel()
    await topology.delete(channel)
    await topology.declare(channel)
    data = b"\x89PNG\r\n\x1a\n not really a png"
    first = FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source="s3://upstream/alice/photo.png",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/png",
        original_name="photo.png",
    )
    scanned = first.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27431")
    key = object_key(first.owner, first.file_id, first.received_at, first.original_name)
    stored = scanned.follow(FileStored, bucket=settings.s3.bucket_name, key=key)
    done = stored.follow(FileThumbnailed, bucket=stored.bucket, key=stored.key)
    await pool.execute(REFUSE_ONE_FILE.format(file_id=first.file_id))
    consumer = StageConsumer(await build(settings), amqp, topology)
    await consumer.start()
    try:
        publisher = await broker.Publisher.create(connection, amqp, topology)
        for event in (first, scanned, stored, done):
            await publisher.publish(event)

        async def attention() -> Any:
            row = await fetch_file(pool, first.file_id, "alice")
            return row if row is not None and row["attention"] is not None else None

        seen = FileSummary(**_summary(await until(attention)))  # as GET /v1/files/{id} says
        assert seen.status == FileStatus.STORED
        assert seen.attention is not None
        assert (seen.attention.stage, seen.attention.event_type) == ("commit", done.type)
        assert seen.attention.event_id == done.event_id
        assert seen.attention.error_type == "RaiseError"
        assert "may not become available" in seen.attention.error_message
        assert seen.attention.attempts == amqp.max_attempts
        history = await pool.fetch(
            "SELECT event_type, detail FROM file_events WHERE file_id = $1", first.file_id
        )
        [notice] = [row["detail"] for row in history if row["event_type"] == "file.dead_lettered"]
        assert notice.startswith("dead-lettered by the commit stage after 3 attempt(s)")

        code, report = await doctor()
        assert code == 1
        [listed] = report["stuck"]
        assert (listed["file_id"], listed["status"]) == (str(first.file_id), "stored")
        assert listed["where"] == (
            f"dead-lettered by commit (RaiseError): "
            f"sluice dlq replay --stage commit --file-id {first.file_id}"
        )

        await pool.execute("DROP TRIGGER refuse_available ON file_versions")
        result = await replay(
            connection, topology, Selection(stages=("commit",), file_id=str(first.file_id)),
            settings=amqp,
        )  # fmt: skip
        assert result.replayed == 1

        async def available() -> bool:
            row = await fetch_file(pool, first.file_id, "alice")
            return row is not None and row["status"] == FileStatus.AVAILABLE

        await until(available)
        row = await fetch_file(pool, first.file_id, "alice")
        assert row is not None and row["attention"] is None
        assert await pool.fetchval("SELECT count(*) FROM files WHERE attention IS NOT NULL") == 0
        assert await doctor() == (0, {"older_than_s": 3600.0, "stuck": []})
    finally:
        await consumer.stop()
        await topology.delete(channel)
        await connection.close()
