"""Data errors are permanent, and no library text reaches PostgreSQL raw: the commit stage
against the real PostgreSQL (database ``sluice_test_data_errors``).

A HEIC whose decoder error held NUL bytes once made the commit of its ``file.thumbnailed`` fail
three times with ``CharacterNotInRepertoireError`` (retried as if transient), and the file stayed
``stored``. Now the text is made safe where the event is read, and a value PostgreSQL refuses is
an :class:`~shared.errors.InvalidData` (permanent: dead-lettered at once, never retried).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.commit.handler import Deps, handle
from services.commit.repository import FileRepository
from shared.adapters.db import create_pool
from shared.adapters.spool import LocalSpool
from shared.errors import InvalidData, PermanentError
from shared.events import (
    BaseEvent,
    FileReceived,
    FileScanned,
    FileStored,
    FileThumbnailed,
    parse_event,
)
from shared.naming import object_key
from shared.settings import DatabaseSettings
from shared.status import FileStatus
from tests.databases import fresh_database

pytestmark = pytest.mark.integration

NAME = "sluice_test_data_errors"
DATABASE = DatabaseSettings(url=f"postgresql://postgres@127.0.0.1:5432/{NAME}")
DATA = b"\x00\x00\x00\x18ftypheic not really a heic"
DECODER_ERROR = "heif: Invalid input: Unspecified\x00\x00 (\x1b[0m" + "detail " * 1000


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[Any]:
    await asyncio.to_thread(fresh_database, NAME)
    pool = await create_pool(DATABASE)
    yield pool
    await pool.close()


@pytest.fixture
def deps(pool: Any, tmp_path: Any) -> Deps:
    return Deps(
        repository=FileRepository(pool), spool=LocalSpool(tmp_path / "spool"), bucket="sluice"
    )


def stored_heic() -> tuple[FileReceived, FileScanned, FileStored]:
    first = FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source=f"spool://{uuid.uuid4()}.bin",
        size_bytes=len(DATA),
        sha256=hashlib.sha256(DATA).hexdigest(),
        content_type="image/heic",
        original_name="photo.heic",
    )
    scanned = first.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27431")
    key = object_key(first.owner, first.file_id, first.received_at, first.original_name)
    stored = scanned.follow(FileStored, bucket="sluice", key=key)
    return first, scanned, stored


async def commit_all(events: list[BaseEvent], deps: Deps) -> None:
    for event in events:
        await handle(event, deps)


async def test_a_decoder_error_with_nul_is_committed_and_the_file_is_available(
    pool: Any, deps: Deps
) -> None:
    first, scanned, stored = stored_heic()
    await commit_all([first, scanned, stored], deps)
    # As the run loop reads it: the message body, parsed (the producer's text was raw).
    thumbnailed = stored.follow(
        FileThumbnailed, bucket=stored.bucket, key=stored.key, thumbnail_error="placeholder"
    )
    body = thumbnailed.model_dump_json().replace("placeholder", _json_escaped(DECODER_ERROR))
    await commit_all([parse_event(body.encode())], deps)

    file = await pool.fetchrow("SELECT status FROM files WHERE file_id = $1", first.file_id)
    version = await pool.fetchrow(
        "SELECT status, thumbnail_error FROM file_versions WHERE file_id = $1", first.file_id
    )
    assert file["status"] == version["status"] == FileStatus.AVAILABLE
    assert version["thumbnail_error"].startswith("heif: Invalid input: Unspecified\\x00\\x00 (")
    assert len(version["thumbnail_error"]) == 2048


async def test_a_value_postgresql_refuses_is_permanent_and_writes_nothing(
    pool: Any, deps: Deps
) -> None:
    """An event built without validation (as an older producer might have sent it) carrying
    NUL: PostgreSQL refuses it; the error is permanent and the transaction left nothing."""
    first, _, _ = stored_heic()
    raw = FileReceived.model_construct(**{**dict(first), "kind": "photo\x00"})
    with pytest.raises(InvalidData) as caught:
        await handle(raw, deps)
    assert isinstance(caught.value, PermanentError)
    # The jsonb payload copy is refused first (UntranslatableCharacterError, SQLSTATE 22P05).
    assert str(caught.value).startswith("PostgreSQL refused a value: ")
    assert str(first.file_id) in str(caught.value)
    rows = await pool.fetchval("SELECT count(*) FROM file_events WHERE file_id = $1", first.file_id)
    assert rows == 0


def _json_escaped(text: str) -> str:
    return json.dumps(text)[1:-1]
