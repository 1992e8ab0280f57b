"""``sluice reconcile`` against the real PostgreSQL (database ``sluice_test_reconcile``) and
SeaweedFS (bucket ``sluice-test-reconcile``), run as a process so exit codes, stdout and stderr
are the ones cron sees.

Rows are inserted the way the commit stage writes them and objects put directly. Owners
``alice``, ``alice-x`` and ``alice.b`` are used together on purpose: SeaweedFS lists ``alice/…``
before ``alice-x/…`` (directory order), which is not the UTF-8 binary order of the S3 API, so
the default ``--listing-order binary`` runs meet keys out of order and must still be right.

``--fix`` publishes to the real RabbitMQ under the AMQP prefix ``t_reconcile``; the tests read
the ``file.corrupted`` events from a queue of their own bound to that exchange. No commit stage
runs: a test that needs the events recorded sets the statuses as the commit stage would.
Nothing is skipped: without PostgreSQL, SeaweedFS or RabbitMQ every test fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import psycopg
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from psycopg.types.json import Jsonb

from shared.adapters import broker, db
from shared.adapters.storage import S3ObjectStorage
from shared.errors import BrokerUnavailable
from shared.events import FileCorrupted, parse_event
from shared.naming import object_key, thumbnail_key
from shared.ops.reconcile import ListingOrder, ReconcileOptions, mark_corrupted, reconcile
from shared.settings import AmqpSettings, DatabaseSettings, S3Settings
from shared.topology import Topology
from tests.databases import fresh_database
from tests.localenv import FreshBucket

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASE = "postgresql://postgres@127.0.0.1:5432"
DATABASE = f"{BASE}/sluice_test_reconcile"
BUCKET = "sluice-test-reconcile"
PREFIX = "t_reconcile"
TOPOLOGY = Topology(prefix=PREFIX)
# The command as the `sluice` app registers it, alone in a Typer app.
APP = (
    "import typer; from services.cli.reconcile import reconcile; "
    "app = typer.Typer(); app.command()(reconcile); app()"
)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.stdout)
        return document

    @property
    def error(self) -> str:
        """stderr as one line, without the frame of Typer's error panel."""
        return " ".join(self.stderr.replace("│", " ").split())


def sluice_reconcile(*args: str, bucket: str = BUCKET, **environ: str) -> Run:
    env = {
        **os.environ,
        "SLUICE_DATABASE_URL": DATABASE,
        "S3_BUCKET_NAME": bucket,
        "SLUICE_AMQP_PREFIX": PREFIX,
        "SLUICE_LOG_LEVEL": "warning",
        **environ,
    }
    done = subprocess.run(
        [sys.executable, "-c", APP, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Version:
    """A version as the commit stage records it, and its objects."""

    file_id: uuid.UUID
    key: str
    thumbnails: tuple[str, ...]
    data: bytes
    status: str = "available"


@pytest.fixture(scope="module")
def s3(raw_s3: Any, fresh_bucket: FreshBucket) -> Any:
    fresh_bucket(BUCKET)
    return raw_s3


@pytest.fixture(scope="module")
def database(services: object) -> str:
    fresh_database("sluice_test_reconcile")
    return DATABASE


@pytest.fixture
def s3_clean(s3: Any, database: str) -> Iterator[Any]:
    """An empty bucket and empty tables for each test."""
    with psycopg.connect(database) as conn:
        conn.execute("TRUNCATE files, file_versions, file_events CASCADE")
    while keys := [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]:
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys]})
    yield s3


def put(s3: Any, key: str, body: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def exists(s3: Any, key: str) -> bool:
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
    except botocore.exceptions.ClientError:
        return False
    return True


def record(
    s3: Any,
    count: int = 1,
    *,
    owners: tuple[str, ...] = ("alice",),
    name: str = "cat.jpg",
    sizes: tuple[int, ...] = (256, 1024),
    status: str = "available",
) -> list[Version]:
    """``count`` committed versions (owners in turn) and their objects, put concurrently."""
    versions: list[Version] = []
    files: list[tuple[Any, ...]] = []
    rows: list[tuple[Any, ...]] = []
    objects: list[tuple[str, bytes]] = []
    received = datetime.now(UTC)
    for n in range(count):
        file_id, owner = uuid.uuid4(), owners[n % len(owners)]
        key = object_key(owner, file_id, received, name)
        data = f"original {file_id}".encode()
        thumb_keys = tuple(thumbnail_key(key, size) for size in sizes)
        thumbs = [
            {"size_px": size, "key": k, "width": size, "height": size * 2 // 3, "size_bytes": 5}
            for size, k in zip(sizes, thumb_keys, strict=True)
        ]
        versions.append(Version(file_id, key, thumb_keys, data, status))
        files.append((file_id, owner, name, status, received))
        sha256 = hashlib.sha256(data).hexdigest()
        source = f"spool://{file_id}"
        rows.append((file_id, status, len(data), sha256, source, BUCKET, key, Jsonb(thumbs)))
        objects += [(key, data)] + [(k, b"thumb") for k in thumb_keys]  # 5 bytes, as recorded
    with psycopg.connect(DATABASE) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO files (file_id, owner, original_name, content_type, status, received_at)"
            " VALUES (%s, %s, %s, 'image/jpeg', %s, %s)",
            files,
        )
        cur.executemany(
            "INSERT INTO file_versions (file_id, version_number, status, size_bytes, sha256,"
            " source, bucket, object_key, thumbnails) VALUES (%s, 1, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: put(s3, *item), objects))
    return versions


def record_unstored(file_id: uuid.UUID, status: str) -> None:
    """A version that has no object yet (or never will: rejected)."""
    with psycopg.connect(DATABASE) as conn:
        conn.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, status, received_at)"
            " VALUES (%s, 'alice', 'a.jpg', 'image/jpeg', %s, now())",
            (file_id, status),
        )
        conn.execute(
            "INSERT INTO file_versions (file_id, version_number, status, size_bytes, sha256,"
            " source) VALUES (%s, 1, %s, 3, %s, %s)",
            (file_id, status, "0" * 64, f"spool://{file_id}"),
        )


def test_consistent_storage_reports_nothing(s3_clean: Any) -> None:
    s3 = s3_clean
    record(s3, 6, owners=("alice", "alice-x", "alice.b"))
    record(s3, 2, owners=("bob",), name="doc.pdf", sizes=())
    record_unstored(uuid.uuid4(), "rejected")
    record_unstored(uuid.uuid4(), "scanned")

    for order in ("binary", "segments"):
        run = sluice_reconcile("--json", "--listing-order", order)
        assert run.code == 0, run.stderr + run.stdout
        counts = run.doc["counts"]
        assert counts["objects_listed"] == 6 * 3 + 2
        assert counts["keys_expected"] == 6 * 3 + 2
        assert counts["originals_checked"] == 8
        for kind in ("missing_objects", "missing_thumbnails", "orphans", "checksum_mismatches"):
            assert counts[kind] == 0 and run.doc[kind] == []
        if order == "segments":  # SeaweedFS walks directories: nothing out of that order
            assert counts["out_of_order_keys"] == 0
        else:  # 'alice/…' before 'alice-x/…' is not binary order, and the report is still right
            assert counts["out_of_order_keys"] > 0

    human = sluice_reconcile()
    assert human.code == 0, human.stderr
    assert "0 missing" in human.stdout and "0 orphans" in human.stdout

    deep = sluice_reconcile("--json", "--deep")
    assert deep.code == 0, deep.stderr + deep.stdout
    assert deep.doc["counts"]["deep_checked"] == 8


def test_missing_object_and_missing_thumbnail_are_reported(s3_clean: Any) -> None:
    s3 = s3_clean
    lost, thumbless, _ = record(s3, 3, owners=("alice", "alice-x", "bob"))
    s3.delete_object(Bucket=BUCKET, Key=lost.key)
    s3.delete_object(Bucket=BUCKET, Key=thumbless.thumbnails[1])

    for order in ("binary", "segments"):
        run = sluice_reconcile("--json", "--listing-order", order)
        assert run.code == 1, run.stderr
        assert run.doc["missing_objects"] == [
            {
                "file_id": str(lost.file_id),
                "version_number": 1,
                "key": lost.key,
                "status": "available",
                "size_px": None,
            }
        ]
        assert run.doc["missing_thumbnails"] == [
            {
                "file_id": str(thumbless.file_id),
                "version_number": 1,
                "key": thumbless.thumbnails[1],
                "status": "available",
                "size_px": 1024,
            }
        ]
        assert run.doc["orphans"] == []  # lost's thumbnails are still named by its version

    human = sluice_reconcile()
    assert human.code == 1
    assert "missing objects: 1" in human.stdout and lost.key in human.stdout
    assert "missing thumbnails: 1" in human.stdout and thumbless.thumbnails[1] in human.stdout


def test_orphans_are_reported_only_past_the_grace_period(s3_clean: Any) -> None:
    s3 = s3_clean
    record(s3, 2, owners=("alice", "alice-x"))
    orphan = f"alice/{uuid.uuid4()}-20260101T000000Z-left-behind.jpg"
    put(s3, orphan, b"x" * 1234)

    young = sluice_reconcile("--json")  # default grace 1h: a store may be in flight
    assert young.code == 0, young.stderr
    assert young.doc["orphans"] == [] and young.doc["counts"]["young_objects_skipped"] == 1

    old = sluice_reconcile("--json", "--grace", "0s")
    assert old.code == 1, old.stderr
    [found] = old.doc["orphans"]
    assert found["key"] == orphan and found["size_bytes"] == 1234
    assert 0 <= found["age_s"] < 600 and found["file_status"] is None and found["kept"] is None
    assert old.doc["counts"]["orphan_bytes"] == 1234
    assert old.doc["deleted"] == [] and exists(s3, orphan)  # reported, never deleted


def test_deleting_below_the_grace_period_is_refused(s3_clean: Any) -> None:
    s3 = s3_clean
    orphan = "alice/stray.bin"
    put(s3, orphan, b"stray")
    for args in (
        ("--delete-orphans-older-than", "0s"),
        ("--delete-orphans-older-than", "30m"),
        ("--delete-orphans-older-than", "5m", "--grace", "10m"),
    ):
        run = sluice_reconcile(*args)
        assert run.code == 2, run.stdout + run.stderr
        assert "shorter than the grace period" in run.error
    bad = sluice_reconcile("--grace", "soon")
    assert bad.code == 2 and "not a duration" in bad.error
    assert exists(s3, orphan)


def test_delete_orphans_removes_only_old_unnamed_objects(s3_clean: Any) -> None:
    s3 = s3_clean
    versions = record(s3, 6, owners=("alice", "alice-x", "alice.b"))
    in_progress = uuid.uuid4()  # its file.stored is still on its way to the commit stage
    record_unstored(in_progress, "scanned")
    kept_key = f"alice/{in_progress}-20260101T000000Z-a.jpg"
    orphans = {
        f"alice/{uuid.uuid4()}-20260101T000000Z-gone.jpg": b"a" * 10,
        versions[0].key + ".thumb-512.webp": b"b" * 20,  # a size no version lists
        "backups/2026/notes.txt": b"c" * 30,  # not Sluice's naming at all
    }
    for key, body in {**orphans, kept_key: b"d" * 40}.items():
        put(s3, key, body)

    run = sluice_reconcile("--json", "--grace", "0s", "--delete-orphans-older-than", "0s")
    assert run.code == 1, run.stderr
    assert {d["key"] for d in run.doc["deleted"]} == set(orphans)
    assert run.doc["counts"]["deleted_bytes"] == 60
    assert {o["key"] for o in run.doc["orphans"]} == {*orphans, kept_key}
    [kept] = [o for o in run.doc["orphans"] if o["key"] == kept_key]
    assert kept["kept"] == "file in progress (scanned)" and kept["file_status"] == "scanned"

    assert not any(exists(s3, key) for key in orphans)
    assert exists(s3, kept_key)
    for version in versions:
        assert all(exists(s3, key) for key in (version.key, *version.thumbnails))

    again = sluice_reconcile("--json", "--grace", "0s")
    assert again.code == 1  # the file in progress is still reported
    assert [o["key"] for o in again.doc["orphans"]] == [kept_key]


def test_deep_finds_bytes_that_changed(s3_clean: Any) -> None:
    s3 = s3_clean
    same_size, other_size, _ = record(s3, 3, owners=("alice", "bob"))
    swapped = bytes(reversed(same_size.data))
    put(s3, same_size.key, swapped)
    put(s3, other_size.key, other_size.data + b"!")

    shallow = sluice_reconcile("--json")
    assert shallow.code == 1, shallow.stderr
    [by_size] = shallow.doc["checksum_mismatches"]
    assert by_size["key"] == other_size.key and by_size["check"] == "size"
    assert (by_size["expected_size_bytes"], by_size["actual_size_bytes"]) == (
        len(other_size.data),
        len(other_size.data) + 1,
    )

    deep = sluice_reconcile("--json", "--deep")
    assert deep.code == 1, deep.stderr
    by_key = {m["key"]: m for m in deep.doc["checksum_mismatches"]}
    assert set(by_key) == {same_size.key, other_size.key}
    hashed = by_key[same_size.key]
    assert hashed["check"] == "sha256"
    assert hashed["file_id"] == str(same_size.file_id)
    assert hashed["expected_sha256"] == hashlib.sha256(same_size.data).hexdigest()
    assert hashed["actual_sha256"] == hashlib.sha256(swapped).hexdigest()
    assert deep.doc["counts"]["deep_checked"] == 2  # the one of another size is not re-read


def test_json_document_shape(s3_clean: Any) -> None:
    s3 = s3_clean
    record(s3, 1)
    for n in range(3):
        put(s3, f"carol/stray-{n}.bin", b"s")

    run = sluice_reconcile("--json", "--grace", "0s", "--max-findings", "2")
    assert run.code == 1, run.stderr
    doc = run.doc
    assert set(doc) == {
        "bucket",
        "started_at",
        "finished_at",
        "options",
        "counts",
        "truncated",
        "missing_objects",
        "missing_thumbnails",
        "orphans",
        "checksum_mismatches",
        "deleted",
        "fixed",
    }
    assert doc["fixed"] is None  # report-only
    assert doc["bucket"] == BUCKET
    started = datetime.fromisoformat(doc["started_at"])
    assert started.tzinfo is not None
    assert timedelta(0) <= datetime.fromisoformat(doc["finished_at"]) - started
    assert doc["options"] == {
        "grace_s": 0.0,
        "delete_orphans_older_than_s": None,
        "deep": False,
        "listing_order": "binary",
    }
    assert doc["counts"]["orphans"] == 3 and len(doc["orphans"]) == 2 and doc["truncated"] is True
    assert all(isinstance(value, int) for value in doc["counts"].values())
    assert set(doc["orphans"][0]) == {
        "key",
        "size_bytes",
        "last_modified",
        "age_s",
        "file_status",
        "kept",
    }


def test_pages_through_more_objects_than_one_listing_page(s3_clean: Any) -> None:
    s3 = s3_clean
    versions = record(s3, 500, owners=("alice", "alice-x", "alice.b", "zed"))  # 1,500 objects
    late = max(versions, key=lambda v: v.key)  # past the first page in either order
    s3.delete_object(Bucket=BUCKET, Key=late.key)
    s3.delete_object(Bucket=BUCKET, Key=versions[7].thumbnails[0])
    put(s3, "zed/zz-orphan.bin", b"o" * 7)

    for order in ("segments", "binary"):
        run = sluice_reconcile("--json", "--grace", "0s", "--listing-order", order)
        assert run.code == 1, run.stderr
        counts = run.doc["counts"]
        assert counts["objects_listed"] == 1500 - 2 + 1
        assert counts["keys_expected"] == 1500
        assert [m["key"] for m in run.doc["missing_objects"]] == [late.key]
        assert [m["key"] for m in run.doc["missing_thumbnails"]] == [versions[7].thumbnails[0]]
        assert [o["key"] for o in run.doc["orphans"]] == ["zed/zz-orphan.bin"]
        assert counts["originals_checked"] == 499
        assert counts["checksum_mismatches"] == 0


def test_an_unreachable_bucket_is_an_error(s3_clean: Any) -> None:
    run = sluice_reconcile("--json", bucket="sluice-test-no-such-bucket")
    assert run.code == 2
    assert run.stdout == "" and "sluice-test-no-such-bucket" in run.error


# --fix ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def amqp(services: object) -> AsyncIterator[AbstractRobustConnection]:
    """A connection to the real RabbitMQ and the ``t_reconcile`` topology, fresh."""
    connection = await broker.connect(AmqpSettings(prefix=PREFIX))
    channel = await connection.channel()
    await TOPOLOGY.delete(channel)
    await TOPOLOGY.declare(channel)
    yield connection
    await TOPOLOGY.delete(channel)
    await connection.close()


@pytest.fixture
async def corrupted(amqp: AbstractRobustConnection) -> AsyncIterator[AbstractQueue]:
    """An empty queue of the test's own, bound to ``file.corrupted`` on the events exchange."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(TOPOLOGY.exchange, FileCorrupted.routing_key)
    yield queue
    await channel.close()


async def drain(queue: AbstractQueue) -> list[FileCorrupted]:
    """Every event waiting on ``queue`` (the CLI has exited: its publishes were confirmed)."""
    events: list[FileCorrupted] = []
    for _ in range(2):  # a second look after a pause, so a late message is not missed
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            event = parse_event(message.body)
            assert isinstance(event, FileCorrupted)
            events.append(event)
        await asyncio.sleep(0.2)
    return events


async def run_cli(*args: str) -> Run:
    """``sluice reconcile`` without blocking the loop the broker connection lives on."""
    return await asyncio.to_thread(sluice_reconcile, *args)


def set_status(versions: list[Version], status: str) -> None:
    """What the commit stage does with ``file.corrupted`` (version and file status)."""
    ids = [v.file_id for v in versions]
    with psycopg.connect(DATABASE) as conn:
        conn.execute("UPDATE file_versions SET status = %s WHERE file_id = ANY(%s)", (status, ids))
        conn.execute("UPDATE files SET status = %s WHERE file_id = ANY(%s)", (status, ids))


async def test_fix_marks_each_missing_original_corrupted_once(
    s3_clean: Any, corrupted: AbstractQueue
) -> None:
    s3 = s3_clean
    lost, thumbless, _ = record(s3, 3, owners=("alice", "alice-x", "bob"))
    [lost_stored] = record(s3, 1, owners=("alice.b",), status="stored")
    with psycopg.connect(DATABASE) as conn:
        conn.execute(
            "UPDATE files SET kind = 'photo', metadata = %s WHERE file_id = %s",
            (Jsonb({"album": "2026", "tags": ["cat"]}), lost.file_id),
        )
    for key in (lost.key, lost_stored.key, thumbless.thumbnails[0]):
        s3.delete_object(Bucket=BUCKET, Key=key)

    human = await run_cli("--fix")
    assert human.code == 1, human.stderr + human.stdout
    assert "missing objects: 2" in human.stdout
    assert "marked 2 version(s) corrupted" in human.stdout
    first = await drain(corrupted)
    assert sorted((e.file_id, e.key) for e in first) == sorted(
        [(lost.file_id, lost.key), (lost_stored.file_id, lost_stored.key)]
    )  # one per missing original; the missing thumbnail is only reported
    event = next(e for e in first if e.file_id == lost.file_id)
    assert (event.bucket, event.version_number, event.owner) == (BUCKET, 1, "alice")
    assert event.detail == "object missing (reconcile)"
    assert (event.size_bytes, event.sha256) == (
        len(lost.data),
        hashlib.sha256(lost.data).hexdigest(),
    )
    assert (event.kind, event.metadata) == ("photo", {"album": "2026", "tags": ["cat"]})
    assert (event.original_name, event.content_type) == ("cat.jpg", "image/jpeg")

    again = await run_cli("--fix", "--json")  # before the commit stage recorded them
    assert again.code == 1, again.stderr
    fixed = again.doc["fixed"]
    assert (fixed["total"], fixed["marked"], fixed["skipped"], fixed["failed"]) == (2, 2, 0, 0)
    assert (fixed["left"], fixed["error"]) == (0, None)
    assert {item["outcome"] for item in fixed["items"]} == {"marked"}
    second = await drain(corrupted)
    ids = {e.event_id for e in first}
    assert {e.event_id for e in second} == ids  # the same events: recorded once
    assert {item["event_id"] for item in fixed["items"]} == {str(i) for i in ids}

    set_status([lost, lost_stored], "corrupted")  # the commit stage recorded them
    put(s3, thumbless.thumbnails[0], b"thumb")
    done = await run_cli("--fix", "--json")
    assert done.code == 0, done.stderr + done.stdout
    assert done.doc["missing_objects"] == [] and done.doc["counts"]["already_corrupted"] == 2
    assert done.doc["fixed"]["total"] == 0 and done.doc["fixed"]["items"] == []
    assert await drain(corrupted) == []


async def test_fix_marks_content_mismatches_corrupted(
    s3_clean: Any, corrupted: AbstractQueue
) -> None:
    s3 = s3_clean
    same_size, other_size, _ = record(s3, 3, owners=("alice", "bob"))
    put(s3, same_size.key, bytes(reversed(same_size.data)))
    put(s3, other_size.key, other_size.data + b"!")

    shallow = await run_cli("--fix", "--json")  # sizes only: the swapped bytes are not seen
    assert shallow.code == 1, shallow.stderr
    [by_size] = await drain(corrupted)
    assert (by_size.file_id, by_size.key) == (other_size.file_id, other_size.key)
    size = len(other_size.data)
    assert by_size.detail == f"size {size + 1} B, recorded {size} B (reconcile)"

    deep = await run_cli("--fix", "--deep", "--json")
    assert deep.code == 1, deep.stderr
    assert deep.doc["fixed"]["marked"] == 2
    details = {e.key: e.detail for e in await drain(corrupted)}
    assert details == {
        same_size.key: "SHA-256 differs (reconcile --deep)",
        other_size.key: by_size.detail,
    }

    set_status([same_size, other_size], "corrupted")
    after = await run_cli("--fix", "--deep", "--json")
    assert after.code == 0, after.stderr + after.stdout
    assert after.doc["checksum_mismatches"] == [] and after.doc["counts"]["already_corrupted"] == 2
    assert after.doc["counts"]["deep_checked"] == 1
    assert await drain(corrupted) == []


async def test_report_only_publishes_nothing(s3_clean: Any, corrupted: AbstractQueue) -> None:
    s3 = s3_clean
    lost, changed = record(s3, 2)
    s3.delete_object(Bucket=BUCKET, Key=lost.key)
    put(s3, changed.key, changed.data + b"?")

    for args in ((), ("--report-only",), ("--json", "--deep")):
        run = await run_cli(*args)
        assert run.code == 1, run.stderr
        assert "marked" not in run.stdout
    assert run.doc["fixed"] is None
    assert len(run.doc["missing_objects"]) == 1 and len(run.doc["checksum_mismatches"]) == 1
    assert await drain(corrupted) == []


async def test_fix_past_max_findings_says_run_again(
    s3_clean: Any, corrupted: AbstractQueue
) -> None:
    s3 = s3_clean
    versions = record(s3, 3, owners=("alice", "bob", "carol"))
    for version in versions:
        s3.delete_object(Bucket=BUCKET, Key=version.key)

    human = await run_cli("--fix", "--max-findings", "2")
    assert human.code == 1, human.stderr
    assert "marked 2 of 3 version(s) corrupted" in human.stdout
    assert "run again" in human.stdout
    marked = await drain(corrupted)
    assert len(marked) == 2

    set_status([v for v in versions if v.file_id in {e.file_id for e in marked}], "corrupted")
    rest = await run_cli("--fix", "--json", "--max-findings", "2")
    assert rest.code == 1, rest.stderr
    assert rest.doc["fixed"]["total"] == 1 and rest.doc["fixed"]["left"] == 0
    assert rest.doc["counts"]["already_corrupted"] == 2
    [last] = await drain(corrupted)
    assert {last.file_id, *(e.file_id for e in marked)} == {v.file_id for v in versions}


async def test_mark_corrupted_skips_what_changed_and_stops_on_a_broker_failure(
    s3_clean: Any,
) -> None:
    s3 = s3_clean
    versions = record(s3, 4, owners=("alice", "bob"))
    for version in versions:
        s3.delete_object(Bucket=BUCKET, Key=version.key)
    pool = await db.create_pool(DatabaseSettings(url=DATABASE, pool_max_size=2))
    try:
        async with S3ObjectStorage(S3Settings(bucket_name=BUCKET)) as storage:
            options = ReconcileOptions(listing_order=ListingOrder.SEGMENTS)
            report = await reconcile(pool, storage, options)
        first, second, *_ = report.missing_objects.items
        assert report.missing_objects.total == 4
        # Between the check and the fix: one file deleted, one recorded corrupted already.
        await pool.execute("DELETE FROM files WHERE file_id = $1", first.file_id)
        await pool.execute(
            "UPDATE file_versions SET status = 'corrupted' WHERE file_id = $1", second.file_id
        )
        published: list[FileCorrupted] = []

        async def publish(event: FileCorrupted) -> None:
            if published:
                raise BrokerUnavailable("publish not confirmed: test")
            published.append(event)

        result = await mark_corrupted(report, pool, publish)
    finally:
        await pool.close()
    assert [(o.key, o.reason) for o in result.skipped] == [
        (first.key, "version deleted since the check"),
        (second.key, "status is corrupted now"),
    ]
    [marked] = result.marked
    assert [marked.event_id] == [e.event_id for e in published]
    [failed] = result.failed
    assert failed.reason == result.error == "publish not confirmed: test"
    assert (result.total, result.left) == (4, 0)


def test_fix_without_the_broker_is_an_error_before_the_run(s3_clean: Any) -> None:
    s3 = s3_clean
    [lost] = record(s3, 1)
    s3.delete_object(Bucket=BUCKET, Key=lost.key)
    nobody = {"SLUICE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}  # nothing listens on port 1

    run = sluice_reconcile("--fix", "--json", **nobody)
    assert run.code == 2, run.stdout + run.stderr
    assert run.stdout == "" and "BrokerUnavailable" in run.error

    report_only = sluice_reconcile("--json", **nobody)  # the broker is not needed to report
    assert report_only.code == 1, report_only.stderr
