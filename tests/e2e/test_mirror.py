"""The backup mirror end to end (docs/operations.md § Backup mirror): ``sluice run`` with
``SLUICE_MIRROR_ENABLED`` and a second SeaweedFS of the test's own (``weed mini`` on its own
ports and directory) as the mirror.

What a user checks: every object of an available file (original and thumbnails) is on the
mirror with the same bytes; ``sluice reconcile --mirror`` finds the stores the same, then
reports a missing, an extra and a changed object once they are made; a ``file.deleted``
(published here as the deletion feature publishes it: ``file_id``, ``owner`` and the common
fields) leaves none of the file's objects on the mirror.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared import devservices
from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline
from tests.faults.private_seaweedfs import PrivateSeaweedFS, private_seaweedfs

pytestmark = pytest.mark.e2e

NAME = "e2emirror"
MIRROR_BUCKET = "sluice-e2emirror-copy"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSeaweedFS]:
    with private_seaweedfs(tmp_path_factory.mktemp("mirror-seaweedfs")) as instance:
        instance.ensure_bucket(MIRROR_BUCKET)
        yield instance


@pytest.fixture(scope="module")
def pipeline(
    services: object, mirror: PrivateSeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    yield from start_pipeline(
        tmp_path_factory.mktemp("e2e-mirror"),
        NAME,
        {
            "SLUICE_MIRROR_ENABLED": "true",
            "SLUICE_MIRROR_ENDPOINT": mirror.endpoint,
            "SLUICE_MIRROR_BUCKET": MIRROR_BUCKET,
            "SLUICE_MIRROR_ACCESS_KEY": mirror.config.s3_access_key,
            "SLUICE_MIRROR_SECRET_KEY": mirror.config.s3_secret_key,
        },
    )


def mirror_keys(mirror: PrivateSeaweedFS) -> set[str]:
    listed = mirror.client().list_objects_v2(Bucket=MIRROR_BUCKET).get("Contents", [])
    return {o["Key"] for o in listed}


def reconcile_mirror(pipeline: Pipeline) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "services", "reconcile", "--mirror", "--grace", "0s", "--json"],
        env={**pipeline.env, "SLUICE_LOG_LEVEL": "warning"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_the_mirror_holds_identical_bytes_and_a_deletion_leaves_none(
    pipeline: Pipeline, mirror: PrivateSeaweedFS
) -> None:
    main: Any = devservices.s3_client()
    files = {n: (ROOT / "samples" / n).read_bytes() for n in ("photo.png", "document.pdf")}
    ids = {}
    with pipeline.client() as client:
        for name, data in files.items():
            answer = client.post("/v1/files", files={"file": (name, data)})
            assert answer.status_code == 202, answer.text
            ids[name] = answer.json()["file_id"]
    keys: dict[str, list[str]] = {}
    for name, file_id in ids.items():
        assert pipeline.wait_final(file_id)["status"] == "available"
        [(key, thumbnails)] = pipeline.sql(
            "SELECT object_key, thumbnails FROM file_versions WHERE file_id = %s", file_id
        )
        keys[name] = [key, *(t["key"] for t in thumbnails)]
    expected = {k for ks in keys.values() for k in ks}
    assert len(expected) == 4  # two originals, the photo's two thumbnails

    deadline = time.monotonic() + 60
    while mirror_keys(mirror) != expected and time.monotonic() < deadline:
        time.sleep(0.3)
    assert mirror_keys(mirror) == expected
    for key in expected:
        here = main.get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
        there = mirror.client().get_object(Bucket=MIRROR_BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(there).digest() == hashlib.sha256(here).digest(), key
    assert pipeline.sql("SELECT count(*) FROM mirrored_objects") == [(4,)]

    code, report = reconcile_mirror(pipeline)
    assert code == 0, report
    assert report["compared"] == 4 and report["counts"] == {"missing": 0, "extra": 0, "checksum": 0}

    # Make the stores disagree three ways, then put them back.
    s3 = mirror.client()
    pdf_key, thumb_key = keys["document.pdf"][0], keys["photo.png"][1]
    pdf = s3.get_object(Bucket=MIRROR_BUCKET, Key=pdf_key)["Body"].read()
    thumb = s3.get_object(Bucket=MIRROR_BUCKET, Key=thumb_key)
    s3.delete_object(Bucket=MIRROR_BUCKET, Key=pdf_key)
    s3.put_object(Bucket=MIRROR_BUCKET, Key="stray/object", Body=b"not ours")
    s3.put_object(
        Bucket=MIRROR_BUCKET,
        Key=thumb_key,
        Body=b"changed",
        Metadata={"sha256": hashlib.sha256(b"changed").hexdigest()},
    )
    code, report = reconcile_mirror(pipeline)
    assert code == 1
    found = {(d["kind"], d["key"]) for d in report["differences"]}
    assert found == {("missing", pdf_key), ("extra", "stray/object"), ("checksum", thumb_key)}
    s3.put_object(Bucket=MIRROR_BUCKET, Key=pdf_key, Body=pdf)
    s3.put_object(
        Bucket=MIRROR_BUCKET, Key=thumb_key, Body=thumb["Body"].read(), Metadata=thumb["Metadata"]
    )
    s3.delete_object(Bucket=MIRROR_BUCKET, Key="stray/object")

    # The photo's owner deletes it: DELETE publishes file.deleted, which the mirror consumes.
    photo = uuid.UUID(ids["photo.png"])
    with pipeline.client() as client:
        answer = client.delete(f"/v1/files/{photo}")
        assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 60
    while mirror_keys(mirror) & set(keys["photo.png"]) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert mirror_keys(mirror) == set(keys["document.pdf"])  # none of the photo's objects left
    assert pipeline.sql("SELECT count(*) FROM mirrored_objects WHERE file_id = %s", photo) == [(0,)]
