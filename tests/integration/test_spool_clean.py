"""``sluice spool clean`` against a real PostgreSQL: stale entries go, files in flight stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.databases import fresh_database

ROOT = Path(__file__).resolve().parents[2]
BASE = "postgresql://postgres@127.0.0.1:5432"
DATABASE = f"{BASE}/sluice_test_spool"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database(services: object) -> str:
    fresh_database("sluice_test_spool")
    return DATABASE


def record(file_id: uuid.UUID, status: str) -> None:
    with psycopg.connect(DATABASE) as conn:
        conn.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, status, received_at)"
            " VALUES (%s, 'alice', 'a.jpg', 'image/jpeg', %s, now())",
            (file_id, status),
        )
        conn.execute(
            "INSERT INTO file_versions"
            " (file_id, version_number, status, size_bytes, sha256, source)"
            " VALUES (%s, 1, %s, 3, %s, %s)",
            (file_id, status, "0" * 64, f"spool://{file_id}"),
        )


def entry(spool: Path, name: str, age_s: float) -> Path:
    path = spool / name
    path.write_bytes(b"abc")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def clean(spool: Path, *args: str) -> str:
    env = {**os.environ, "SLUICE_DATABASE_URL": DATABASE, "SLUICE_SPOOL_DIR": str(spool)}
    done = subprocess.run(
        [sys.executable, "-m", "services", "spool", "clean", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_stale_entries_go_and_files_in_flight_stay(database: str, tmp_path: Path) -> None:
    day = 86400.0
    ids = {name: uuid.uuid4() for name in ("available", "rejected", "received", "stored", "none")}
    for name in ("available", "rejected", "received", "stored"):
        record(ids[name], name)
    stale = {
        entry(tmp_path, str(ids["available"]), 2 * day),  # final: commit's removal failed
        entry(tmp_path, str(ids["rejected"]), 2 * day),
        entry(tmp_path, str(ids["none"]), 2 * day),  # never published: the gateway died
        entry(tmp_path, f"{uuid.uuid4()}.partial", 2 * day),  # an upload never finished
        entry(tmp_path, f"{uuid.uuid4()}.abandoned", 2 * day),  # a 503 tombstone
    }
    kept = {
        entry(tmp_path, str(ids["received"]), 9 * day),  # waiting in a dead-letter queue
        entry(tmp_path, str(ids["stored"]), 9 * day),
        entry(tmp_path, str(uuid.uuid4()), 60),  # young: in flight
        entry(tmp_path, f"{uuid.uuid4()}.partial", 60),  # an upload in progress
        entry(tmp_path, "notes.txt", 9 * day),  # not Sluice's
    }

    dry = clean(tmp_path, "--older-than", "24h", "--dry-run")
    assert "would remove 5" in dry
    assert all(path.exists() for path in stale | kept)

    out = clean(tmp_path, "--older-than", "24h")
    assert "removed 5, kept 5" in out and "notes.txt" in out
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)


def test_bad_duration_is_refused(database: str, tmp_path: Path) -> None:
    env = {**os.environ, "SLUICE_DATABASE_URL": DATABASE, "SLUICE_SPOOL_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "services", "spool", "clean", "--older-than", "soon"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "not a duration" in done.stderr + done.stdout
