"""``sluice reconcile`` against the real PostgreSQL (database ``sluice_test_reconcile``) and
SeaweedFS (bucket ``sluice-test-reconcile``), run as a process so exit codes, stdout and stderr
are the ones cron sees.

Rows are inserted the way the commit stage writes them and objects put directly. Owners
``alice``, ``alice-x`` and ``alice.b`` are used together on purpose: SeaweedFS lists ``alice/…``
before ``alice-x/…`` (directory order), which is not the UTF-8 binary order of the S3 API, so
the default ``--listing-order binary`` runs meet keys out of order and must still be right.
Nothing is skipped: without PostgreSQL or SeaweedFS every test fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import psycopg
import pytest
from psycopg.types.json import Jsonb

from shared import db, devservices
from shared.naming import object_key, thumbnail_key
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASE = "postgresql://postgres@127.0.0.1:5432"
DATABASE = f"{BASE}/sluice_test_reconcile"
BUCKET = "sluice-test-reconcile"
# The command as the `sluice` app registers it, alone in a Typer app.
APP = (
    "import typer; from services.cli_reconcile import reconcile; "
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


def sluice_reconcile(*args: str, bucket: str = BUCKET) -> Run:
    env = {
        **os.environ,
        "SLUICE_DATABASE_URL": DATABASE,
        "S3_BUCKET_NAME": bucket,
        "SLUICE_LOG_LEVEL": "warning",
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
def s3(services: object) -> Any:
    client = devservices.s3_client(timeout_s=30.0)
    try:
        client.create_bucket(Bucket=BUCKET)
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise
    return client


@pytest.fixture(scope="module")
def database(services: object) -> str:
    with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "sluice_test_reconcile" WITH (FORCE)')
    settings = DatabaseSettings(url=DATABASE)
    asyncio.run(db.ensure_database(settings))
    db.migrate(settings)
    return DATABASE


@pytest.fixture
def s3_clean(s3: Any, database: str) -> Iterator[Any]:
    """An empty bucket and empty tables for each test."""
    with psycopg.connect(database) as conn:
        conn.execute("TRUNCATE files, file_versions, file_events")
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
    }
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
