"""``DELETE /v1/files/{id}`` against the real pipeline, on both storage backends (docs/gdpr.md).

One ``sluice run`` per backend (S3 on SeaweedFS; ``SLUICE_STORAGE_BACKEND=local``). A deleted
file answers 404 at once on every read route; once the purge has run, nothing of it is left:
no object or thumbnail (the bucket listed, or the local directory walked), no row in
``file_versions`` or ``fallback_blobs``, no spool file, and no table holds its name or
metadata; its history is the one ``file.deleted``. Files deleted while their stages still run
end the same way: a late ``file.stored`` or ``file.thumbnailed`` never brings them back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import devservices
from shared.adapters.broker import event_message
from shared.events import FileReceived
from tests.e2e.pipeline import ROOT, Pipeline, queue_depths, start_pipeline

SAMPLES = ROOT / "samples"
PHOTO = SAMPLES / "photo-rotated.jpg"
MARK = "dsubject-7f3a"  # in the names and metadata, to find any copy left in a table

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["s3", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Path:
    return tmp_path_factory.mktemp(f"e2e-delete-{backend}")


@pytest.fixture(scope="module")
def pipeline(tmp: Path, backend: str) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp, f"e2edel{backend}", local_storage=backend == "local")


def object_keys(pipeline: Pipeline, tmp: Path, backend: str, prefix: str) -> list[str]:
    """The keys under ``prefix`` in the pipeline's bucket, as a user would list them."""
    if backend == "local":
        root = tmp / "objects" / pipeline.bucket
        return sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file()
            if str(p.relative_to(root)).startswith(prefix)
        )
    client = devservices.s3_client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=pipeline.bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def rows_mentioning(pipeline: Pipeline, text: str) -> dict[str, int]:
    """Table → rows whose text form contains ``text``, over every table of the database."""
    tables = [
        name
        for (name,) in pipeline.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_type = 'BASE TABLE'"
        )
    ]
    found = {}
    for table in tables:
        (count,) = pipeline.sql(
            f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s', f"%{text}%"
        )[0]
        if count:
            found[table] = count
    return found


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s; log: {log}"
        time.sleep(0.2)


def settled(pipeline: Pipeline) -> bool:
    return not any(queue_depths(pipeline).values())


def upload(pipeline: Pipeline, name: str, owner: str = "alice", mark: str = MARK) -> str:
    with pipeline.client(owner) as client:
        answer = client.post(
            "/v1/files",
            files={"file": (name, PHOTO.read_bytes(), "image/jpeg")},
            data={"metadata": f'{{"subject": "{mark}"}}'},
        )
    assert answer.status_code == 202, answer.text
    file_id: str = answer.json()["file_id"]
    return file_id


def assert_nothing_left(
    pipeline: Pipeline, tmp: Path, backend: str, file_id: str, owner: str = "alice"
) -> None:
    assert object_keys(pipeline, tmp, backend, f"{owner}/{file_id}") == []
    assert pipeline.sql("SELECT count(*) FROM file_versions WHERE file_id = %s", file_id) == [(0,)]
    assert pipeline.sql("SELECT count(*) FROM fallback_blobs WHERE file_id = %s", file_id) == [(0,)]
    assert [p.name for p in pipeline.spool_dir.glob(f"{file_id}*")] == []
    assert pipeline.sql("SELECT status, original_name FROM files WHERE file_id = %s", file_id) == [
        ("deleted", "")
    ]
    history = pipeline.sql(
        "SELECT event_type, detail, payload::text FROM file_events WHERE file_id = %s", file_id
    )
    assert [(kind, detail) for kind, detail, _ in history] == [("file.deleted", "deleted")]
    assert MARK not in history[0][2]


def test_a_deleted_file_is_404_at_once_and_leaves_nothing(
    pipeline: Pipeline, tmp: Path, backend: str
) -> None:
    file_id = upload(pipeline, f"{MARK}-holiday.jpg")
    info = pipeline.wait_final(file_id)
    assert info["status"] == "available" and len(info["thumbnails"]) == 2
    assert len(object_keys(pipeline, tmp, backend, f"alice/{file_id}")) == 3  # original + 2

    with pipeline.client() as client:
        answer = client.delete(f"/v1/files/{file_id}")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "deleted"
        # At once, before any consumer ran: every read route is 404.
        assert client.get(f"/v1/files/{file_id}").status_code == 404
        assert client.get(f"/v1/files/{file_id}/content").status_code == 404
        assert client.get(f"/v1/files/{file_id}/events").status_code == 404
        assert client.get(f"/v1/files/{file_id}/versions").status_code == 404
        assert client.get(f"/v1/files/{file_id}/versions/1").status_code == 404
        assert client.get(f"/v1/files/{file_id}/versions/1/content").status_code == 404
        assert client.patch(f"/v1/files/{file_id}", json={"kind": "x"}).status_code == 404
        assert client.post(f"/v1/files/{file_id}/copy").status_code == 404
        assert file_id not in {f["file_id"] for f in client.get("/v1/files").json()["files"]}
        assert client.delete(f"/v1/files/{file_id}").status_code == 404

    wait_until(
        lambda: settled(pipeline) and not object_keys(pipeline, tmp, backend, f"alice/{file_id}"),
        60,
        "purge",
        pipeline.log_path,
    )
    assert_nothing_left(pipeline, tmp, backend, file_id)
    assert rows_mentioning(pipeline, MARK) == {}


def test_another_owner_gets_404_and_deletes_nothing(
    pipeline: Pipeline, tmp: Path, backend: str
) -> None:
    file_id = upload(pipeline, "kept.jpg", mark="kept")
    pipeline.wait_final(file_id)
    with pipeline.client("bob") as client:
        assert client.delete(f"/v1/files/{file_id}").status_code == 404
        assert client.delete(f"/v1/files/{uuid.uuid4()}").status_code == 404
    with pipeline.client() as client:
        assert client.get(f"/v1/files/{file_id}").json()["status"] == "available"
        assert client.get(f"/v1/files/{file_id}/content").status_code == 200
    assert len(object_keys(pipeline, tmp, backend, f"alice/{file_id}")) == 3


def test_files_deleted_in_flight_never_come_back(
    pipeline: Pipeline, tmp: Path, backend: str
) -> None:
    """Each file is deleted as soon as the commit stage recorded its ``file.received``: its scan,
    store and thumbnail are still to run, and their events arrive after the deletion."""
    ids: list[str] = []
    statuses: dict[str, Any] = {}
    with pipeline.client() as client:
        for n in range(6):
            file_id = upload(pipeline, f"{MARK}-inflight-{n}.jpg")
            ids.append(file_id)
            deadline = time.monotonic() + 30
            while (answer := client.get(f"/v1/files/{file_id}")).status_code == 404:
                assert time.monotonic() < deadline, pipeline.log_path
                time.sleep(0.01)
            statuses[file_id] = answer.json()["status"]
            assert client.delete(f"/v1/files/{file_id}").status_code == 202
    assert set(statuses.values()) & {"received", "scanned", "stored"}, statuses

    def gone() -> bool:
        return settled(pipeline) and not any(
            object_keys(pipeline, tmp, backend, f"alice/{file_id}") for file_id in ids
        )

    wait_until(gone, 90, "every in-flight file purged", pipeline.log_path)
    time.sleep(2)  # anything late would have landed by now
    assert settled(pipeline)
    for file_id in ids:
        assert_nothing_left(pipeline, tmp, backend, file_id)
    assert rows_mentioning(pipeline, MARK) == {}


def test_reconcile_knows_deleted_files(pipeline: Pipeline, tmp: Path, backend: str) -> None:
    """After the deletions above, ``sluice reconcile`` reports nothing missing or corrupted; an
    object of a deleted file that is still there (its purge not run yet, put back here by
    hand) is counted as awaiting its purge, not as an orphan."""
    (file_id,) = pipeline.sql("SELECT file_id::text FROM files WHERE status = 'deleted' LIMIT 1")[0]
    key = f"alice/{file_id}-20260101T000000Z-late.jpg"
    if backend == "local":
        path = tmp / "objects" / pipeline.bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"late bytes")
    else:
        devservices.s3_client().put_object(Bucket=pipeline.bucket, Key=key, Body=b"late bytes")
    done = subprocess.run(
        [sys.executable, "-m", "services", "reconcile", "--report-only", "--json", "--grace", "0s"],
        env=pipeline.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    counts = report["counts"]
    assert counts["missing_objects"] == counts["missing_thumbnails"] == 0, report
    assert counts["orphans"] == 0, report
    assert counts["deleted_awaiting_purge"] == 1, report
    assert pipeline.sql("SELECT count(*) FROM files WHERE status = 'corrupted'") == [(0,)]


def test_openapi_describes_the_new_routes_and_their_errors(pipeline: Pipeline) -> None:
    spec = httpx.get(f"{pipeline.url}/openapi.json", timeout=10).json()
    delete = spec["paths"]["/v1/files/{file_id}"]["delete"]
    assert {"202", "401", "404", "422", "503"} <= set(delete["responses"])
    erase = spec["paths"]["/ops/api/gdpr/erasures"]["post"]
    assert {"200", "400", "401", "403", "422", "503"} <= set(erase["responses"])


def test_an_open_event_stream_ends_with_the_deletion(pipeline: Pipeline) -> None:
    """A file whose scan dead-lettered (its spooled bytes are gone) never gets its
    ``file.committed``: its event stream stays open until the file is deleted, then sends
    ``file.deleted`` and ends."""
    file_id = uuid.uuid4()
    event = FileReceived.new(
        file_id=file_id,
        owner="alice",
        source=f"spool://{file_id}",
        size_bytes=3,
        sha256=hashlib.sha256(b"abc").hexdigest(),
        content_type="image/jpeg",
        original_name=f"{MARK}-stuck.jpg",
    )
    asyncio.run(pipeline.publish_to_queue("scan", event_message(event)))
    received: list[str] = []

    def follow() -> None:
        with (
            pipeline.client() as client,
            client.stream("GET", f"/v1/files/{file_id}/events", timeout=60) as answer,
        ):
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    received.append(line.removeprefix("event: "))

    wait_until(
        lambda: (
            pipeline.sql("SELECT attention IS NOT NULL FROM files WHERE file_id = %s", file_id)
            == [(True,)]
        ),
        30,
        "the dead letter recorded",
        pipeline.log_path,
    )
    reader = threading.Thread(target=follow)
    reader.start()
    wait_until(lambda: bool(received), 10, "the stream's first event", pipeline.log_path)
    with pipeline.client() as client:
        assert client.delete(f"/v1/files/{file_id}").status_code == 202
    reader.join(20)
    assert not reader.is_alive(), received
    assert received[-1] == "file.deleted" and "file.committed" not in received
