"""``sluice spool clean`` and the spool entries of versions after the first, ``<file_id>.v<n>``:
a stale entry of a final version goes, an entry of a version still moving stays, whatever the
status of the file's other versions (the real PostgreSQL, the CLI as a process)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.databases import fresh_database
from tests.integration.test_spool_clean import BASE, ROOT, entry

DATABASE = f"{BASE}/sluice_test_spool_versions"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database(services: object) -> str:
    fresh_database("sluice_test_spool_versions")
    return DATABASE


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


def record(file_id: uuid.UUID, statuses: list[str]) -> None:
    """A file whose version n has ``statuses[n - 1]``."""
    with psycopg.connect(DATABASE) as conn:
        conn.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, status, received_at)"
            " VALUES (%s, 'alice', 'a.jpg', 'image/jpeg', %s, now())",
            (file_id, statuses[0]),
        )
        for n, status in enumerate(statuses, start=1):
            conn.execute(
                "INSERT INTO file_versions"
                " (file_id, version_number, status, size_bytes, sha256, source)"
                " VALUES (%s, %s, %s, 3, %s, %s)",
                (file_id, n, status, "0" * 64, f"spool://{file_id}.v{n}"),
            )


def test_stale_version_entries_go_and_versions_in_flight_stay(
    database: str, tmp_path: Path
) -> None:
    day = 86400.0
    done, moving = uuid.uuid4(), uuid.uuid4()
    record(done, ["received", "available"])  # version 1 waits in a dead-letter queue
    record(moving, ["available", "received"])  # version 2 waits in a dead-letter queue
    stale = entry(tmp_path, f"{done}.v2", 2 * day)
    kept = {
        entry(tmp_path, f"{moving}.v2", 9 * day),
        entry(tmp_path, str(done), 9 * day),  # version 1 of `done` is still moving
    }
    out = clean(tmp_path, "--older-than", "24h")
    assert "removed 1, kept 2" in out, out
    assert not stale.exists()
    assert all(path.exists() for path in kept)
