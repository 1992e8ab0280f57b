"""The commit stage's side of the text transforms against the real PostgreSQL (database
``sluice_test_commit_texts``): ``file.text_extracted`` / ``file.text_failed`` join the history
and write ``file_texts`` (with its generated search vector), in any order with the file's other
events, once per event, never for another owner, and never moving the status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.commit.handler import Deps, handle
from services.commit.repository import FileRepository
from shared.adapters.db import create_pool
from shared.adapters.spool import LocalSpool
from shared.errors import ForgedEvent
from shared.events import FileStored, FileTextExtracted
from shared.naming import object_key, text_key
from shared.settings import DatabaseSettings
from shared.transforms import event_id_of, text_failed
from tests.integration.test_commit import BUCKET, chain, handle_all, spooled
from tests.localenv import FreshDatabase

pytestmark = pytest.mark.integration

TEXT = "Le bateau arrive au port avec une cargaison de pommes"


@pytest.fixture(scope="module")
async def database(fresh_database: FreshDatabase) -> DatabaseSettings:
    return await fresh_database("sluice_test_commit_texts")


@pytest.fixture(scope="module")
async def pool(database: DatabaseSettings) -> AsyncIterator[Any]:
    pool = await create_pool(database)
    yield pool
    await pool.close()


@pytest.fixture
def spool(tmp_path: Path) -> LocalSpool:
    return LocalSpool(tmp_path / "spool")


@pytest.fixture
def deps(pool: Any, spool: LocalSpool) -> Deps:
    return Deps(repository=FileRepository(pool), spool=spool, bucket=BUCKET)


def extracted(stored: FileStored, text: str = TEXT, **fields: Any) -> FileTextExtracted:
    values: dict[str, Any] = {
        "event_id": event_id_of(stored, FileTextExtracted.routing_key, "ocr"),
        "transform": "ocr",
        "bucket": stored.bucket,
        "key": stored.key,
        "text_key": text_key(stored.key),
        "text_size_bytes": len(text.encode()),
        "text_sha256": "0" * 64,
        "pages": 1,
        "pages_read": 1,
        "ocr_pages": 1,
        "language": "fra",
        "search_text": text,
        **fields,
    }
    return stored.follow(FileTextExtracted, **values)


async def text_row(pool: Any, file_id: Any) -> Any:
    return await pool.fetchrow("SELECT * FROM file_texts WHERE file_id = $1", file_id)


async def found(pool: Any, words: str) -> set[Any]:
    rows = await pool.fetch(
        "SELECT file_id FROM file_texts WHERE search @@ websearch_to_tsquery('simple', $1)", words
    )
    return {row["file_id"] for row in rows}


async def test_text_recorded_between_stored_and_thumbnailed(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    text = extracted(stored)
    out = await handle_all([first, scanned, stored, text, done], deps)
    assert [event.type for event in out] == ["file.committed"]
    row = await pool.fetchrow("SELECT * FROM file_texts WHERE file_id = $1", first.file_id)
    assert (row["state"], row["transform"], row["language"]) == ("extracted", "ocr", "fra")
    assert row["text_key"] == text_key(stored.key) and row["owner"] == "alice"
    assert first.file_id in await found(pool, "cargaison pommes")
    assert first.file_id not in await found(pool, "cargaison -pommes")
    status = await pool.fetchval("SELECT status FROM files WHERE file_id = $1", first.file_id)
    assert status == "available"
    details = await pool.fetch(
        "SELECT detail FROM file_events WHERE file_id = $1 AND event_type = $2",
        first.file_id,
        "file.text_extracted",
    )
    assert [r["detail"] for r in details] == ["text (ocr): image by OCR (fra), 53 bytes"]


async def test_a_text_before_everything_else_and_twice(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    text = extracted(stored)
    await handle_all([text, text, first, scanned, stored, done], deps)
    status = await pool.fetchval("SELECT status FROM files WHERE file_id = $1", first.file_id)
    assert status == "available"
    count = await pool.fetchval(
        "SELECT count(*) FROM file_events WHERE file_id = $1 AND event_type = $2",
        first.file_id,
        "file.text_extracted",
    )
    assert count == 1


async def test_the_later_event_of_a_version_stays(pool: Any, deps: Deps, spool: LocalSpool) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    failed = text_failed(stored, "ocr", "OCR timed out after 60 s")
    later = extracted(stored, occurred_at=failed.occurred_at + timedelta(seconds=5))
    await handle_all([first, scanned, stored, done, later, failed], deps)
    row = await pool.fetchrow(
        "SELECT state, error FROM file_texts WHERE file_id = $1", first.file_id
    )
    assert (row["state"], row["error"]) == ("extracted", None)
    other = await spooled(spool)
    o_scanned, o_stored, o_done = chain(other)
    o_failed = text_failed(o_stored, "ocr", "not a readable image: cannot identify image file")
    await handle_all([other, o_scanned, o_stored, o_done, o_failed], deps)
    row = await pool.fetchrow(
        "SELECT state, error FROM file_texts WHERE file_id = $1", other.file_id
    )
    assert row["state"] == "failed" and row["error"].startswith("not a readable image")
    status = await pool.fetchval("SELECT status FROM files WHERE file_id = $1", other.file_id)
    assert status == "available"


async def test_another_owners_text_writes_nothing(pool: Any, deps: Deps, spool: LocalSpool) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    await handle_all([first, scanned, stored, done], deps)
    key = object_key("mallory", first.file_id, first.received_at, first.original_name)
    forged = extracted(stored).model_copy(
        update={"owner": "mallory", "key": key, "text_key": text_key(key)}
    )
    with pytest.raises(ForgedEvent):
        await handle(forged, deps)
    assert (
        await pool.fetchval("SELECT count(*) FROM file_texts WHERE file_id = $1", first.file_id)
        == 0
    )
    events = await pool.fetch(
        "SELECT event_type FROM file_events WHERE file_id = $1", first.file_id
    )
    assert "file.text_extracted" not in [row["event_type"] for row in events]
