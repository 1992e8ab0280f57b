"""``sluice gdpr export`` of a version kept in the fallback table, sealed with
``SLUICE_FALLBACK_ENCRYPTION_*`` (AES-256-GCM, docs/fallback.md): the zip holds the file's own
bytes, not its row text. Real PostgreSQL (database ``sluice_test_export_sealed``) and the local
storage backend in a temporary directory; the rows are written as the fallback worker and the
commit stage write them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
import zipfile
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from shared.adapters.row_cipher import RowCipher
from shared.ops.gdpr.export import export_owner
from shared.settings import FallbackSettings, StorageSettings
from tests.databases import fresh_database
from tests.localenv import Local

pytestmark = pytest.mark.integration

DATABASE = "sluice_test_export_sealed"


def test_a_sealed_fallback_version_is_exported_as_its_own_bytes(
    local: Local, tmp_path: Path
) -> None:
    database = fresh_database(DATABASE)
    settings = local.settings(
        tmp_path / "spool", amqp=local.amqp("t_export_sealed"), database=database
    )
    (tmp_path / "objects").mkdir()
    settings.storage = StorageSettings(backend="local", local_dir=tmp_path / "objects")
    keys = {"k1": base64.b64encode(os.urandom(32)).decode()}
    settings.fallback = FallbackSettings(
        encryption_keys=SecretStr(json.dumps(keys)), encryption_key_id="k1"
    )
    file_id, data = uuid.uuid4(), os.urandom(50_000)
    sha256 = hashlib.sha256(data).hexdigest()
    text = RowCipher.from_settings(settings.fallback).seal(
        data, file_id=file_id, version_number=1, sha256=sha256
    )
    assert text.startswith("aesgcm:k1:")  # sealed, not Base64 of the bytes
    with psycopg.connect(database.url) as conn:
        conn.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, status, received_at)"
            " VALUES (%s, 'alice', 'kept.jpg', 'image/jpeg', 'fallback', now())",
            (file_id,),
        )
        conn.execute(
            "INSERT INTO file_versions (file_id, version_number, status, size_bytes, sha256,"
            " source) VALUES (%s, 1, 'fallback', %s, %s, %s)",
            (file_id, len(data), sha256, f"spool://{file_id}"),
        )
        conn.execute(
            "INSERT INTO fallback_blobs (file_id, version_number, owner, content_type,"
            " size_bytes, sha256, data_base64, event, reason)"
            " VALUES (%s, 1, 'alice', 'image/jpeg', %s, %s, %s, '{}', 'S3 unavailable')",
            (file_id, len(data), sha256, text),
        )

    out = tmp_path / "alice.zip"
    summary = asyncio.run(export_owner(settings, "alice", out))

    assert (summary.files, summary.versions, summary.missing) == (1, 1, 0)
    with zipfile.ZipFile(out) as archive:
        document = json.loads(archive.read("metadata.json"))
        (version,) = document["files"][0]["versions"]
        assert version["sha256_matches"] is True, version
        assert archive.read(version["path"]) == data
