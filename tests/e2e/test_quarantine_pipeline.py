"""The pipeline end to end with the S3 spool (``SLUICE_SPOOL_BACKEND=s3``).

One ``sluice run`` process on a fresh database, topology, bucket and quarantine bucket; every
sample goes in over HTTP, and a user checks: the final statuses, the bytes in the final bucket
(equal to the upload's), the thumbnails, the stage history; the uploads went through the
quarantine bucket (``quarantine://`` sources), nothing of them is left there once committed,
and nothing but the gateway's outbox is in the local spool directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import devservices
from tests.e2e.pipeline import ROOT, Pipeline, empty_bucket, start_pipeline
from tests.faults.test_s3_outage import _huge_jpeg

pytestmark = pytest.mark.e2e

SAMPLES = ROOT / "samples"
NAME = "e2eq"
QUARANTINE = "sluice-e2e-quarantine"
HISTORY = ["file.received", "file.scanned", "file.stored", "file.thumbnailed", "file.committed"]


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    devservices.up(buckets=[QUARANTINE])
    empty_bucket(QUARANTINE)
    yield from start_pipeline(
        tmp_path_factory.mktemp("e2e-quarantine"),
        NAME,
        {"SLUICE_SPOOL_BACKEND": "s3", "SLUICE_SPOOL_S3_BUCKET": QUARANTINE},
    )


def test_every_sample_goes_through_the_quarantine_bucket(pipeline: Pipeline) -> None:
    s3: Any = devservices.s3_client()
    names = ["photo-rotated.jpg", "photo.png", "animation.gif", "photo.webp", "photo.heic"]
    files: dict[str, tuple[str, bytes]] = {
        name: (name, (SAMPLES / name).read_bytes())
        for name in [*names, "document.pdf", "eicar.pdf"]
    }
    huge = _huge_jpeg()  # 9-10 MB: two parts of the 8 MiB quarantine multipart upload
    files["huge.jpg"] = ("huge.jpg", huge.data)
    ids: dict[str, str] = {}
    with pipeline.client() as client:
        for name, (filename, data) in files.items():
            answer = client.post("/v1/files", files={"file": (filename, data)})
            assert answer.status_code == 202, answer.text
            ids[name] = answer.json()["file_id"]

    for name, file_id in ids.items():
        info = pipeline.wait_final(file_id, timeout_s=180)
        expected = "rejected" if name == "eicar.pdf" else "available"
        assert info["status"] == expected, (name, info)

    for name, file_id in ids.items():
        data = files[name][1]
        [(source,)] = pipeline.sql(
            "SELECT payload->>'source' FROM file_events"
            " WHERE file_id = %s AND event_type = 'file.received'",
            file_id,
        )
        assert source == f"quarantine://{file_id}"
        history = [
            row[0]
            for row in pipeline.sql(
                "SELECT event_type FROM file_events WHERE file_id = %s ORDER BY occurred_at",
                file_id,
            )
        ]
        if name == "eicar.pdf":
            assert history == ["file.received", "file.rejected", "file.committed"]
            continue
        assert history == HISTORY, (name, history)
        [(key, thumbnails)] = pipeline.sql(
            "SELECT object_key, thumbnails FROM file_versions WHERE file_id = %s", file_id
        )
        stored = s3.get_object(Bucket=pipeline.bucket, Key=key)
        assert hashlib.sha256(stored["Body"].read()).hexdigest() == hashlib.sha256(data).hexdigest()
        assert stored["Metadata"].get("sha256") == hashlib.sha256(data).hexdigest()
        if name != "document.pdf":
            assert len(thumbnails) == 2, name
        with pipeline.client() as client:
            content = client.get(f"/v1/files/{file_id}/content", follow_redirects=True)
        assert content.status_code == 200
        assert content.content == data

    # The commit stage removed every quarantine copy (the infected file's too).
    assert s3.list_objects_v2(Bucket=QUARANTINE).get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=QUARANTINE).get("Uploads", []) == []
    on_disk = [p.name for p in Path(pipeline.spool_dir).iterdir() if p.is_file()]
    assert on_disk == []
