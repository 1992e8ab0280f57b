"""The versions and edits routes of the gateway on the real PostgreSQL and RabbitMQ, with no
commit stage consuming: what a client gets while the commit stage is away (PATCH: 202 with the
event id after SLUICE_FILES_EDIT_WAIT_S), what is published, and every refusal (404 for
another owner, 422 and 413 for bad edits, nothing published then). The pipeline itself is in
tests/e2e/test_versions.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from shared.events import FileReceived, FileUpdated, parse_event
from shared.settings import FilesSettings
from tests.integration.gateway.support import (
    PREFIX,
    Gateway,
    MakeSettings,
    Who,
    error_of,
    insert_file,
    jpeg,
    next_event,
    running,
)

pytestmark = pytest.mark.integration
WAIT_S = 0.4


@pytest.fixture(scope="module")
async def quick(
    make_settings: MakeSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """A gateway that waits WAIT_S for the commit stage to apply an edit."""
    settings = make_settings(tmp_path_factory.mktemp("spool-versions"))
    settings.files = FilesSettings(edit_wait_s=WAIT_S)
    async with running(settings) as gateway:
        yield gateway


@pytest.fixture
async def published(amqp: AbstractRobustConnection) -> AsyncIterator[AbstractQueue]:
    """A test queue bound to file.updated and file.received on the gateway's exchange."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    for key in ("file.updated", "file.received"):
        await queue.bind(f"{PREFIX}.events", key)
    yield queue
    await channel.close()


async def test_a_patch_answers_202_with_the_event_id_while_commit_is_away(
    quick: Gateway, pool: asyncpg.Pool, alice: Who, published: AbstractQueue
) -> None:
    owner, headers = alice
    file_id = await insert_file(pool, owner, data=b"jpeg bytes", name="photo.jpg")
    started = time.monotonic()
    answer = await quick.client.patch(
        f"/v1/files/{file_id}",
        headers=headers,
        json={"original_name": "beach.jpeg", "metadata": {"trip": "2026"}},
    )
    elapsed = time.monotonic() - started
    assert answer.status_code == 202, answer.text
    assert WAIT_S <= elapsed < WAIT_S + 3
    body = answer.json()
    assert body["status_url"] == f"/v1/files/{file_id}"
    event = parse_event((await next_event(published)).body)
    assert isinstance(event, FileUpdated)
    assert str(event.event_id) == body["event_id"]
    assert (event.file_id, event.owner, event.version_number) == (file_id, owner, 1)
    assert event.fields == ("original_name", "metadata")
    assert (event.original_name, event.metadata, event.kind) == (
        "beach.jpeg",
        {"trip": "2026"},
        "avatar",  # unchanged fields keep the file's values
    )
    # The gateway wrote nothing: only the commit stage will.
    assert await pool.fetchval("SELECT original_name FROM files WHERE file_id = $1", file_id) == (
        "photo.jpg"
    )


@pytest.mark.parametrize(
    ("edit", "status", "code"),
    [
        ({}, 422, "invalid_request"),
        ({"owner": "bob"}, 422, "invalid_request"),
        ({"original_name": "photo.pdf"}, 422, "unsupported_type"),
        ({"original_name": "photo.exe"}, 422, "unsupported_type"),
        ({"original_name": "\u200b\u202e"}, 422, "invalid_request"),
        ({"original_name": None}, 422, "invalid_request"),
        ({"kind": "a\x01b"}, 422, "invalid_request"),
        ({"kind": "k" * 65}, 422, "invalid_request"),
        ({"metadata": [1, 2]}, 422, "invalid_request"),
        ({"metadata": {"big": "x" * 20_000}}, 413, "too_large"),
    ],
)
async def test_a_bad_edit_is_refused_and_nothing_is_published(
    quick: Gateway,
    pool: asyncpg.Pool,
    alice: Who,
    published: AbstractQueue,
    edit: dict[str, object],
    status: int,
    code: str,
) -> None:
    owner, headers = alice
    file_id = await insert_file(pool, owner, data=b"x", name="photo.jpg")
    answer = await quick.client.patch(f"/v1/files/{file_id}", headers=headers, json=edit)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert await published.get(no_ack=True, fail=False) is None


async def test_another_owner_or_an_unknown_file_is_404(
    quick: Gateway, pool: asyncpg.Pool, alice: Who, bob: Who, published: AbstractQueue
) -> None:
    owner, _ = alice
    file_id = await insert_file(pool, owner, data=b"x")
    _, bobs = bob
    for target in (file_id, uuid.uuid4()):
        patched = await quick.client.patch(f"/v1/files/{target}", headers=bobs, json={"kind": "x"})
        assert patched.status_code == 404
        posted = await quick.client.post(
            f"/v1/files/{target}/versions", headers=bobs, files={"file": ("a.jpg", jpeg())}
        )
        assert error_of(posted)[0] == "not_found"
        for path in ("versions", "versions/1", "versions/1/content"):
            assert (
                await quick.client.get(f"/v1/files/{target}/{path}", headers=bobs)
            ).status_code == 404
        assert (
            await quick.client.post(f"/v1/files/{target}/copy", headers=bobs)
        ).status_code == 404
    assert await published.get(no_ack=True, fail=False) is None


async def test_a_new_version_gets_the_next_number_and_its_own_spool_entry(
    quick: Gateway, pool: asyncpg.Pool, alice: Who, published: AbstractQueue
) -> None:
    owner, headers = alice
    file_id = await insert_file(pool, owner, data=b"v1")
    for expected in (2, 3):
        data = jpeg(1000 * expected)
        answer = await quick.client.post(
            f"/v1/files/{file_id}/versions",
            headers=headers,
            files={"file": ("next.jpg", data, "image/jpeg")},
            data={"kind": "photo", "metadata": json.dumps({"n": expected})},
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["version_number"] == expected
        assert answer.headers["location"] == f"/v1/files/{file_id}/versions/{expected}"
        event = parse_event((await next_event(published)).body)
        assert isinstance(event, FileReceived)
        assert (event.file_id, event.version_number) == (file_id, expected)
        assert event.source == f"spool://{file_id}.v{expected}"
        assert (quick.spool_dir / f"{file_id}.v{expected}").read_bytes() == data
    # The version is not recorded until the commit stage records it: the list has version 1.
    listed = await quick.client.get(f"/v1/files/{file_id}/versions", headers=headers)
    assert [v["version_number"] for v in listed.json()["versions"]] == [1]
    assert (
        await quick.client.get(f"/v1/files/{file_id}/versions/2", headers=headers)
    ).status_code == 404


async def test_a_file_not_available_cannot_be_copied(
    quick: Gateway, pool: asyncpg.Pool, alice: Who
) -> None:
    owner, headers = alice
    file_id = await insert_file(pool, owner, data=b"x", status="scanned")
    answer = await quick.client.post(f"/v1/files/{file_id}/copy", headers=headers)
    assert answer.status_code == 409
    assert error_of(answer)[0] == "not_stored"


async def test_the_openapi_document_describes_every_new_route_with_its_errors(
    quick: Gateway,
) -> None:
    spec = (await quick.client.get("/openapi.json")).json()
    expected = {
        ("/v1/files/{file_id}/versions", "post"): {"202", "401", "404", "413", "415", "422"},
        ("/v1/files/{file_id}/versions", "get"): {"200", "401", "404"},
        ("/v1/files/{file_id}/versions/{version_number}", "get"): {"200", "401", "404"},
        ("/v1/files/{file_id}/versions/{version_number}/content", "get"): {
            "200",
            "401",
            "404",
            "409",
            "503",
        },
        ("/v1/files/{file_id}", "patch"): {"200", "202", "401", "404", "413", "422", "503"},
        ("/v1/files/{file_id}/copy", "post"): {"202", "401", "404", "409", "503"},
        ("/v1/files", "get"): {"200", "401", "422"},
    }
    for (path, method), codes in expected.items():
        operation = spec["paths"][path][method]
        assert codes <= set(operation["responses"]), (path, method)
        assert operation["summary"], (path, method)
    listed = {p["name"] for p in spec["paths"]["/v1/files"]["get"]["parameters"]}
    assert {"status", "kind", "content_type", "received_after", "received_before"} <= listed
    assert "name_prefix" in listed
    patch_body = spec["paths"]["/v1/files/{file_id}"]["patch"]["requestBody"]
    assert "FileEdit" in json.dumps(patch_body)
