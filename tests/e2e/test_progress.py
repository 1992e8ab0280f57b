"""A file's progress, end to end: ``python -m services run`` as a real process (every stage and
the gateway), a real upload followed through ``GET /v1/files/{id}/events``, and ``sluice upload
--follow`` run as a command against it (a sample photo: exit 0, committed; the EICAR PDF: exit
1 with the signature)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from httpx_sse import connect_sse

from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline

pytestmark = pytest.mark.e2e
STAGES = ["file.received", "file.scanned", "file.stored", "file.thumbnailed", "file.committed"]


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    # A 404 of the event route takes the whole first-record wait; it stays at its default
    # (10 s), which a file just accepted needs when the machine is loaded (1 s was too short
    # for the commit stage to record a file.received during a full test run).
    yield from start_pipeline(tmp_path_factory.mktemp("e2e-progress"), "e2e-progress")


def sluice_upload(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**pipeline.env, "SLUICE_URL": pipeline.url, "SLUICE_API_KEY": pipeline.keys["alice"]}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "services", "upload", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_stream_of_a_real_upload_gives_every_stage_in_order_then_ends(
    pipeline: Pipeline,
) -> None:
    with pipeline.client() as client:
        answer = client.post(
            "/v1/files", files={"file": ("photo.png", (ROOT / "samples/photo.png").read_bytes())}
        )
        assert answer.status_code == 202, answer.text
        file_id = answer.json()["file_id"]
        received = []
        with connect_sse(client, "GET", f"/v1/files/{file_id}/events") as source:
            assert source.response.status_code == 200
            for message in source.iter_sse():
                received.append((message, datetime.now(UTC)))
        # the server ended the stream: iter_sse returned
    # Numbered in the order the commit stage recorded them (docs/uploads-progress.md), which two
    # events handled at once (file.scanned reaches the commit and store stages together) may
    # swap; by when they happened they are the stages in order, each once, and the final one,
    # recorded last, closes the stream.
    assert [m.id for m, _ in received] == ["1", "2", "3", "4", "5"]
    data = [json.loads(m.data) for m, _ in received]
    happened = sorted(data, key=lambda d: datetime.fromisoformat(d["occurred_at"]))
    assert [d["type"] for d in happened] == STAGES
    assert received[-1][0].event == "file.committed"
    assert data[-1]["detail"] == "committed: available"
    lags = [
        (at - datetime.fromisoformat(d["recorded_at"])).total_seconds() * 1000
        for (_, at), d in zip(received[1:], data[1:], strict=True)
    ]
    print(f"\nSSE lag, recorded_at -> client (ms): {', '.join(f'{x:.1f}' for x in lags)}")


def test_another_owner_cannot_follow_the_file(pipeline: Pipeline) -> None:
    with pipeline.client() as client:
        answer = client.post(
            "/v1/files", files={"file": ("doc.pdf", (ROOT / "samples/document.pdf").read_bytes())}
        )
    file_id = answer.json()["file_id"]
    pipeline.wait_final(file_id)
    with pipeline.client("bob") as client:
        refused = client.get(f"/v1/files/{file_id}/events")
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"


def test_sluice_upload_follow_shows_committed_and_exits_0(pipeline: Pipeline) -> None:
    started = time.monotonic()
    done = sluice_upload(pipeline, "samples/photo-rotated.jpg", "--follow", "--kind", "photo")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "committed" in out and "available" in out and "match" in out
    assert pipeline.keys["alice"] not in out
    print(f"\nsluice upload --follow of one photo: {time.monotonic() - started:.1f} s\n{out}")


def test_sluice_upload_follow_of_the_eicar_file_exits_1_with_the_reason(
    pipeline: Pipeline,
) -> None:
    done = sluice_upload(pipeline, "samples/eicar.pdf", "samples/document.pdf", "--follow")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if "eicar.pdf" in line]
    assert rows and "rejected" in rows[0] and "Eicar-Test-Signature" in rows[0], done.stdout
    assert any("document.pdf" in line and "available" in line for line in done.stdout.splitlines())


def test_sluice_upload_without_follow_prints_the_file_ids(pipeline: Pipeline) -> None:
    done = sluice_upload(pipeline, "samples/photo.webp")
    assert done.returncode == 0, done.stderr
    file_id, name = done.stdout.split()
    assert name == "samples/photo.webp"
    assert pipeline.wait_final(file_id)["status"] == "available"


def test_sluice_upload_version_of_follows_each_new_version_to_its_own_end(
    pipeline: Pipeline,
) -> None:
    """``--version-of``: each FILE becomes the next version of the file (2, then 3), each
    followed through its own events (not version 1's, long committed) to ``available``."""
    first = sluice_upload(pipeline, "samples/photo.png")
    assert first.returncode == 0, first.stderr
    file_id, _ = first.stdout.split()
    assert pipeline.wait_final(file_id)["status"] == "available"

    done = sluice_upload(
        pipeline,
        "samples/photo-rotated.jpg",
        "samples/photo.webp",
        "--version-of",
        file_id,
        "--follow",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        name: line
        for line in done.stdout.splitlines()
        for name in ("photo-rotated.jpg", "photo.webp")
        if name in line
    }
    assert " 2 " in rows["photo-rotated.jpg"] and "available" in rows["photo-rotated.jpg"], rows
    assert " 3 " in rows["photo.webp"] and "available" in rows["photo.webp"], rows
    assert all("match" in row for row in rows.values()), rows
    with pipeline.client() as client:
        versions = client.get(f"/v1/files/{file_id}/versions").json()["versions"]
    assert [(v["version_number"], v["status"]) for v in versions] == [
        (1, "available"),
        (2, "available"),
        (3, "available"),
    ]

    bad = sluice_upload(pipeline, "samples/photo.png", "--version-of", "not-a-uuid")
    assert bad.returncode == 2, bad.stdout + bad.stderr
