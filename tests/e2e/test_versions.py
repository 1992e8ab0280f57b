"""Versions, edits, copies and list filters end to end: one ``sluice run`` (every worker and
the gateway as processes) on the real RabbitMQ, PostgreSQL, SeaweedFS and clamd.

Issue 13's acceptance: three versions of one file, each listed and readable with its own
SHA-256, checked against the bucket; a PATCH is reflected in GET. Also: a rejected new version
leaves the previous one current, two versions uploaded at once get two numbers, another owner
sees 404, a copy is a new available file with the same bytes under its own key, and the list
filters with their cursor.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shared import devservices
from tests.e2e.pipeline import FINAL, ROOT, Pipeline, start_pipeline

SAMPLES = ROOT / "samples"
VERSIONS = ["photo-rotated.jpg", "photo.png", "photo.webp"]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp_path_factory.mktemp("e2e-versions"), "e2eversions")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def in_bucket(pipeline: Pipeline, key: str) -> bytes:
    body: bytes = devservices.s3_client().get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
    return body


def wait_version(
    pipeline: Pipeline, file_id: str, number: int, owner: str = "alice", timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with pipeline.client(owner) as client:
        while time.monotonic() < deadline:
            answer = client.get(f"/v1/files/{file_id}/versions/{number}")
            if answer.status_code == 200 and answer.json()["status"] in FINAL:
                info: dict[str, Any] = answer.json()
                return info
            assert pipeline.process.poll() is None, f"sluice died; see {pipeline.log_path}"
            time.sleep(0.2)
    raise AssertionError(f"version {number} of {file_id} not final; log: {pipeline.log_path}")


def post_version(pipeline: Pipeline, file_id: str, path: Path, owner: str = "alice") -> Any:
    with pipeline.client(owner) as client:
        return client.post(
            f"/v1/files/{file_id}/versions", files={"file": (path.name, path.read_bytes())}
        )


@pytest.fixture(scope="module")
def three_versions(pipeline: Pipeline) -> tuple[str, list[dict[str, Any]]]:
    """One file uploaded, then two new versions of it, each waited for."""
    first = SAMPLES / VERSIONS[0]
    with pipeline.client() as client:
        answer = client.post("/v1/files", files={"file": (first.name, first.read_bytes())})
    assert answer.status_code == 202, answer.text
    file_id = answer.json()["file_id"]
    assert pipeline.wait_final(file_id)["status"] == "available"
    done = [wait_version(pipeline, file_id, 1)]
    for expected, name in enumerate(VERSIONS[1:], start=2):
        accepted = post_version(pipeline, file_id, SAMPLES / name)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["version_number"] == expected
        assert accepted.headers["Location"] == f"/v1/files/{file_id}/versions/{expected}"
        done.append(wait_version(pipeline, file_id, expected))
    return file_id, done


def test_three_versions_each_listed_and_readable_with_its_own_sha256(
    pipeline: Pipeline, three_versions: tuple[str, list[dict[str, Any]]]
) -> None:
    file_id, _ = three_versions
    with pipeline.client() as client:
        listed = client.get(f"/v1/files/{file_id}/versions")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["current_version"] == 3
        assert [v["version_number"] for v in body["versions"]] == [1, 2, 3]
        assert [v["current"] for v in body["versions"]] == [False, False, True]
        keys = set()
        for version, name in zip(body["versions"], VERSIONS, strict=True):
            local = (SAMPLES / name).read_bytes()
            assert version["status"] == "available", version
            assert version["sha256"] == sha256(local), name
            assert version["original_name"] == name
            n = version["version_number"]
            content = client.get(f"/v1/files/{file_id}/versions/{n}/content")
            assert content.status_code == 200
            assert sha256(content.content) == sha256(local)
            assert content.headers["x-sluice-sha256"] == sha256(local)
            detail = client.get(f"/v1/files/{file_id}/versions/{n}").json()
            assert sha256(in_bucket(pipeline, detail["object_key"])) == sha256(local)
            assert detail["thumbnails"], name  # each version got its own thumbnails
            for thumb in detail["thumbnails"]:
                assert thumb["size_bytes"] > 0
            assert {e["version_number"] for e in detail["history"]} == {n}
            keys.add(detail["object_key"])
        assert len(keys) == 3
        current = client.get(f"/v1/files/{file_id}").json()
        assert current["version_number"] == 3
        assert current["sha256"] == sha256((SAMPLES / VERSIONS[2]).read_bytes())
        assert current["status"] == "available"
        whole = client.get(f"/v1/files/{file_id}/content")
        assert sha256(whole.content) == sha256((SAMPLES / VERSIONS[2]).read_bytes())


def test_a_rejected_version_leaves_the_previous_one_current(
    pipeline: Pipeline, three_versions: tuple[str, list[dict[str, Any]]]
) -> None:
    file_id, _ = three_versions
    accepted = post_version(pipeline, file_id, SAMPLES / "eicar.pdf")
    assert accepted.status_code == 202, accepted.text
    number = accepted.json()["version_number"]
    rejected = wait_version(pipeline, file_id, number)
    assert rejected["status"] == "rejected"
    assert rejected["rejection_reason"] == "infected"
    with pipeline.client() as client:
        current = client.get(f"/v1/files/{file_id}").json()
        assert (current["status"], current["version_number"]) == ("available", 3)
        refused = client.get(f"/v1/files/{file_id}/versions/{number}/content")
        assert refused.status_code == 409
    assert not pipeline.sql(
        "SELECT 1 FROM file_versions WHERE file_id = %s AND version_number = %s"
        " AND object_key IS NOT NULL",
        file_id,
        number,
    )


def test_two_versions_uploaded_at_once_get_two_numbers(pipeline: Pipeline) -> None:
    path = SAMPLES / "photo.png"
    with pipeline.client() as client:
        file_id = client.post("/v1/files", files={"file": (path.name, path.read_bytes())}).json()[
            "file_id"
        ]
    pipeline.wait_final(file_id)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post_version(pipeline, file_id, path), range(4)))
    assert [a.status_code for a in answers] == [202] * 4
    numbers = sorted(a.json()["version_number"] for a in answers)
    assert numbers == [2, 3, 4, 5]
    for n in numbers:
        assert wait_version(pipeline, file_id, n)["status"] == "available"
    with pipeline.client() as client:
        assert client.get(f"/v1/files/{file_id}").json()["version_number"] == 5


def test_another_owner_gets_404(
    pipeline: Pipeline, three_versions: tuple[str, list[dict[str, Any]]]
) -> None:
    file_id, _ = three_versions
    assert post_version(pipeline, file_id, SAMPLES / "photo.png", owner="bob").status_code == 404
    with pipeline.client("bob") as client:
        for path in ("versions", "versions/1", "versions/1/content"):
            assert client.get(f"/v1/files/{file_id}/{path}").status_code == 404, path
        assert client.patch(f"/v1/files/{file_id}", json={"kind": "x"}).status_code == 404
        assert client.post(f"/v1/files/{file_id}/copy").status_code == 404


def test_a_patch_is_reflected_in_get(
    pipeline: Pipeline, three_versions: tuple[str, list[dict[str, Any]]]
) -> None:
    file_id, _ = three_versions
    edit = {"original_name": "holiday.webp", "kind": "album", "metadata": {"place": "Nantes"}}
    with pipeline.client() as client:
        answer = client.patch(f"/v1/files/{file_id}", json=edit)
        assert answer.status_code == 200, answer.text
        assert answer.json()["original_name"] == "holiday.webp"
        shown = client.get(f"/v1/files/{file_id}").json()
        assert (shown["original_name"], shown["kind"], shown["metadata"]) == (
            "holiday.webp",
            "album",
            {"place": "Nantes"},
        )
        assert shown["history"][-1]["type"] == "file.updated"
        assert shown["status"] == "available" and shown["version_number"] == 3
        download = client.get(f"/v1/files/{file_id}/content")
        assert "holiday.webp" in download.headers["content-disposition"]
        only_kind = client.patch(f"/v1/files/{file_id}", json={"kind": None})
        assert only_kind.status_code == 200
        assert (only_kind.json()["kind"], only_kind.json()["original_name"]) == (
            None,
            "holiday.webp",
        )
        wrong = client.patch(f"/v1/files/{file_id}", json={"original_name": "holiday.pdf"})
        assert wrong.status_code == 422
        assert wrong.json()["error"]["code"] == "unsupported_type"
        assert client.get(f"/v1/files/{file_id}").json()["original_name"] == "holiday.webp"


def test_a_copy_is_a_new_available_file_with_the_same_bytes(
    pipeline: Pipeline, three_versions: tuple[str, list[dict[str, Any]]]
) -> None:
    file_id, _ = three_versions
    with pipeline.client() as client:
        answer = client.post(f"/v1/files/{file_id}/copy")
        assert answer.status_code == 202, answer.text
        copy = answer.json()
    assert copy["file_id"] != file_id and copy["version_number"] == 3
    done = pipeline.wait_final(copy["file_id"])
    local = (SAMPLES / VERSIONS[2]).read_bytes()
    assert done["status"] == "available", done
    assert done["sha256"] == sha256(local)
    assert done["object_key"] == copy["object_key"]
    assert sha256(in_bucket(pipeline, copy["object_key"])) == sha256(local)
    assert [e["type"] for e in done["history"]] == [
        "file.received",
        "file.scanned",
        "file.stored",
        "file.thumbnailed",
        "file.committed",
    ]
    with pipeline.client() as client:
        original = client.get(f"/v1/files/{file_id}/versions").json()
        assert len(original["versions"]) >= 3  # the original is untouched


def test_list_filters_and_cursor(
    pipeline: Pipeline, three_versions: tuple[str, list[dict[str, Any]]]
) -> None:
    # Bob's own files: one image kind "avatar", one PDF, one rejected.
    with pipeline.client("bob") as client:
        ids = {}
        for name, kind in (("a-photo.png", "avatar"), ("b-doc.pdf", None), ("c-bad.pdf", None)):
            source = {"a-photo.png": "photo.png", "b-doc.pdf": "document.pdf"}.get(
                name, "eicar.pdf"
            )
            data = {"kind": kind} if kind else {}
            posted = client.post(
                "/v1/files", files={"file": (name, (SAMPLES / source).read_bytes())}, data=data
            )
            assert posted.status_code == 202, posted.text
            ids[name] = posted.json()["file_id"]
        for file_id in ids.values():
            pipeline.wait_final(file_id, owner="bob")

        def names(**params: Any) -> list[str]:
            listed = client.get("/v1/files", params=params)
            assert listed.status_code == 200, listed.text
            return [f["original_name"] for f in listed.json()["files"]]

        assert names(status="rejected") == ["c-bad.pdf"]
        assert names(kind="avatar") == ["a-photo.png"]
        assert names(content_type="application/pdf") == ["c-bad.pdf", "b-doc.pdf"]
        assert names(name_prefix="b-") == ["b-doc.pdf"]
        assert names(name_prefix="%") == []
        assert names(received_after="2999-01-01T00:00:00Z") == []
        assert len(names(received_before="2999-01-01T00:00:00Z")) == 3
        assert client.get("/v1/files", params={"status": "nope"}).status_code == 422
        # A stable cursor: page by one through the PDFs; a cursor of other filters is refused.
        first = client.get("/v1/files", params={"content_type": "application/pdf", "limit": 1})
        cursor = first.json()["next_cursor"]
        second = client.get(
            "/v1/files", params={"content_type": "application/pdf", "limit": 1, "cursor": cursor}
        )
        assert [f["original_name"] for f in second.json()["files"]] == ["b-doc.pdf"]
        assert second.json()["next_cursor"] is None
        other = client.get("/v1/files", params={"status": "available", "cursor": cursor})
        assert other.status_code == 422
