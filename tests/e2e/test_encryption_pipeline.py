"""The pipeline with ``S3_SSE=AES256`` and the S3 spool: what a user finds in the bucket.

One ``sluice run`` process (its store stage checks at start that SeaweedFS honours the
header); a photo and a PDF go in over HTTP; a HEAD of each original and each thumbnail
reports ``ServerSideEncryption: AES256``, and the bytes read back are the upload's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import devservices
from tests.e2e.pipeline import ROOT, Pipeline, empty_bucket, start_pipeline

pytestmark = pytest.mark.e2e

NAME = "e2esse"
QUARANTINE = "sluice-e2esse-quarantine"


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    devservices.up(buckets=[QUARANTINE])
    empty_bucket(QUARANTINE)
    yield from start_pipeline(
        tmp_path_factory.mktemp("e2e-sse"),
        NAME,
        {
            "S3_SSE": "AES256",
            "SLUICE_SPOOL_BACKEND": "s3",
            "SLUICE_SPOOL_S3_BUCKET": QUARANTINE,
        },
    )


def test_originals_and_thumbnails_are_stored_encrypted(pipeline: Pipeline) -> None:
    s3: Any = devservices.s3_client()
    files = {name: (ROOT / "samples" / name).read_bytes() for name in ("photo.png", "document.pdf")}
    ids = {}
    with pipeline.client() as client:
        for name, data in files.items():
            answer = client.post("/v1/files", files={"file": (name, data)})
            assert answer.status_code == 202, answer.text
            ids[name] = answer.json()["file_id"]
    checked = 0
    for name, file_id in ids.items():
        assert pipeline.wait_final(file_id, timeout_s=120)["status"] == "available"
        [(key, thumbnails)] = pipeline.sql(
            "SELECT object_key, thumbnails FROM file_versions WHERE file_id = %s", file_id
        )
        for object_key in [key, *(t["key"] for t in thumbnails)]:
            head = s3.head_object(Bucket=pipeline.bucket, Key=object_key)
            assert head.get("ServerSideEncryption") == "AES256", object_key
            checked += 1
        body = s3.get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(files[name]).digest()
    assert checked == 4  # two originals, two thumbnails of the photo
    log = Path(pipeline.log_path).read_text()
    assert "storage.encryption_checked" in log
