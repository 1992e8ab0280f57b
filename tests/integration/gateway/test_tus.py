"""tus 1.0 at ``/v1/uploads/`` with raw HTTP requests, against the real PostgreSQL, RabbitMQ and
SeaweedFS: discovery, creation (with upload), HEAD, PATCH offsets, 409, 460, termination,
owner isolation, the upload policy, expiry and its cleaner, offsets across a restart."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractQueue

from shared.adapters.resumable import LocalUploadStore, clean_expired
from shared.events import FileReceived, parse_event
from tests.integration.gateway.support import (
    Gateway,
    MakeSettings,
    Who,
    error_of,
    insert_file,
    jpeg,
    next_event,
    pdf,
    running,
    spool_entries,
)

pytestmark = pytest.mark.integration
TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}


def meta(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], length: int, name: str = "photo.jpg"
) -> str:
    answer = await client.post(
        "/v1/uploads/",
        headers={
            **headers,
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": meta(filename=name, kind="avatar", metadata='{"album": "tus"}'),
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.headers["location"]


async def send(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    url: str,
    offset: int,
    data: bytes,
    **extra: str,
) -> httpx.Response:
    return await client.patch(
        url,
        headers={**headers, **TUS, **STREAM, "Upload-Offset": str(offset), **extra},
        content=data,
    )


def upload_dirs(gw: Gateway) -> list[str]:
    root = gw.spool_dir / ".tus"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


async def test_options_discovery_and_cors(gw: Gateway) -> None:
    answer = await gw.client.options("/v1/uploads/")
    assert answer.status_code == 204
    assert answer.headers["tus-version"] == "1.0.0"
    assert set(answer.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    }
    assert int(answer.headers["tus-max-size"]) == 60 * 1024 * 1024  # the largest type: videos
    assert "sha256" in answer.headers["tus-checksum-algorithm"].split(",")
    preflight = await gw.client.options(
        "/v1/uploads/abc",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization,tus-resumable,upload-offset,"
            "upload-checksum,content-type",
        },
    )
    assert preflight.status_code == 200
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "upload-offset", "upload-checksum", "tus-resumable"):
        assert header in allowed
    simple = await gw.client.head("/v1/uploads/abc", headers={**TUS, "Origin": "https://x.example"})
    exposed = simple.headers["access-control-expose-headers"].lower()
    for header in ("location", "upload-offset", "upload-length", "tus-version", "upload-expires"):
        assert header in exposed


async def test_wrong_version_is_412(gw: Gateway, alice: Who) -> None:
    _, headers = alice
    answer = await gw.client.post(
        "/v1/uploads/", headers={**headers, "Tus-Resumable": "0.2.2", "Upload-Length": "10"}
    )
    assert answer.status_code == 412
    assert answer.headers["tus-version"] == "1.0.0"
    missing = await gw.client.post("/v1/uploads/", headers={**headers, "Upload-Length": "10"})
    assert missing.status_code == 412


async def test_upload_in_chunks_is_announced_once(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    owner, headers = alice
    data = jpeg(300_000)
    url = await create(gw.client, headers, len(data))
    head = await gw.client.head(url, headers={**headers, **TUS})
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == str(len(data))
    assert head.headers["tus-resumable"] == "1.0.0"
    assert "upload-expires" in head.headers
    first = await send(gw.client, headers, url, 0, data[:100_000])
    assert first.status_code == 204, first.text
    assert first.headers["upload-offset"] == "100000"
    stale = await send(gw.client, headers, url, 0, data[:100_000])
    assert stale.status_code == 409
    assert error_of(stale)[0] == "offset_mismatch"
    assert (await gw.client.head(url, headers={**headers, **TUS})).headers["upload-offset"] == (
        "100000"
    )
    last = await send(gw.client, headers, url, 100_000, data[100_000:])
    assert last.status_code == 204, last.text
    assert last.headers["upload-offset"] == str(len(data))
    file_id = last.headers["sluice-file-id"]
    assert file_id == str(uuid.UUID(url.rsplit("/", 1)[1]))
    event = parse_event((await next_event(received)).body)
    assert isinstance(event, FileReceived)
    assert (str(event.file_id), event.owner) == (file_id, owner)
    assert event.sha256 == hashlib.sha256(data).hexdigest()
    assert (event.size_bytes, event.content_type, event.kind) == (len(data), "image/jpeg", "avatar")
    assert (event.original_name, event.metadata) == ("photo.jpg", {"album": "tus"})
    assert (gw.spool_dir / file_id).read_bytes() == data
    # A retry of the last PATCH, and a HEAD, report the end; nothing is published again.
    again = await send(gw.client, headers, url, len(data), b"")
    assert again.status_code == 204
    head = await gw.client.head(url, headers={**headers, **TUS})
    assert head.headers["upload-offset"] == str(len(data))
    assert head.headers["sluice-file-id"] == file_id
    assert await received.get(fail=False, timeout=1) is None
    assert (
        sorted(
            p.name
            for p in (gw.spool_dir / ".tus" / url.rsplit("/", 1)[1]).iterdir()
            if p.name.endswith(".chunk")
        )
        == []
    )


async def test_an_upload_naming_a_file_becomes_its_next_version(
    gw: Gateway, received: AbstractQueue, pool: asyncpg.Pool, alice: Who
) -> None:
    owner, headers = alice
    file_id = await insert_file(pool, owner, data=b"v1")
    data = jpeg(120_000)
    created = await gw.client.post(
        "/v1/uploads/",
        headers={
            **headers,
            **TUS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": meta(filename="next.jpg", file_id=str(file_id)),
        },
    )
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    assert url.rsplit("/", 1)[1] != file_id.hex  # the upload has an id of its own
    assert (await send(gw.client, headers, url, 0, data[:50_000])).status_code == 204
    last = await send(gw.client, headers, url, 50_000, data[50_000:])
    assert last.status_code == 204, last.text
    assert (last.headers["sluice-file-id"], last.headers["sluice-version-number"]) == (
        str(file_id),
        "2",
    )
    event = parse_event((await next_event(received)).body)
    assert isinstance(event, FileReceived)
    assert (event.file_id, event.version_number, event.owner) == (file_id, 2, owner)
    assert event.source == f"spool://{file_id}.v2"
    assert event.sha256 == hashlib.sha256(data).hexdigest()
    assert (gw.spool_dir / f"{file_id}.v2").read_bytes() == data
    # A retried last PATCH and a HEAD say the same, and nothing is published or reserved again.
    assert (await send(gw.client, headers, url, len(data), b"")).status_code == 204
    head = await gw.client.head(url, headers={**headers, **TUS})
    assert head.headers["sluice-version-number"] == "2"
    assert await received.get(fail=False, timeout=1) is None
    reserved = await pool.fetch(
        "SELECT version_number FROM version_reservations WHERE file_id = $1", file_id
    )
    assert [row["version_number"] for row in reserved] == [2]


async def test_a_new_files_upload_says_version_1(gw: Gateway, alice: Who) -> None:
    _, headers = alice
    data = jpeg(20_000)
    url = await create(gw.client, headers, len(data))
    last = await send(gw.client, headers, url, 0, data)
    assert last.status_code == 204, last.text
    assert last.headers["sluice-version-number"] == "1"


async def test_a_version_of_a_file_not_the_callers_is_refused_before_any_byte(
    gw: Gateway, pool: asyncpg.Pool, alice: Who, bob: Who
) -> None:
    owner, _ = alice
    _, bobs = bob
    file_id = await insert_file(pool, owner, data=b"v1")
    before = upload_dirs(gw)
    for target, status, code in (
        (str(file_id), 404, "not_found"),  # alice's: bob cannot version it
        (str(uuid.uuid4()), 404, "not_found"),
        ("not-a-file-id", 422, "invalid_request"),
    ):
        answer = await gw.client.post(
            "/v1/uploads/",
            headers={
                **bobs,
                **TUS,
                "Upload-Length": "10",
                "Upload-Metadata": meta(filename="a.jpg", file_id=target),
            },
        )
        assert (answer.status_code, error_of(answer)[0]) == (status, code), answer.text
    assert upload_dirs(gw) == before  # no upload was made


async def test_creation_with_upload(gw: Gateway, received: AbstractQueue, alice: Who) -> None:
    _, headers = alice
    data = pdf(20_000)
    answer = await gw.client.post(
        "/v1/uploads/",
        headers={
            **headers,
            **TUS,
            **STREAM,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": meta(filename="doc.pdf"),
        },
        content=data,
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["upload-offset"] == str(len(data))
    event = parse_event((await next_event(received)).body)
    assert str(event.file_id) == answer.headers["sluice-file-id"]


async def test_wrong_checksum_is_460_and_not_kept(gw: Gateway, alice: Who) -> None:
    _, headers = alice
    data = jpeg(50_000)
    url = await create(gw.client, headers, len(data))
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    answer = await send(
        gw.client, headers, url, 0, data[:20_000], **{"Upload-Checksum": f"sha256 {wrong}"}
    )
    assert answer.status_code == 460
    assert error_of(answer)[0] == "checksum_mismatch"
    assert (await gw.client.head(url, headers={**headers, **TUS})).headers["upload-offset"] == "0"
    right = base64.b64encode(hashlib.sha256(data[:20_000]).digest()).decode()
    answer = await send(
        gw.client, headers, url, 0, data[:20_000], **{"Upload-Checksum": f"sha256 {right}"}
    )
    assert answer.status_code == 204
    assert answer.headers["upload-offset"] == "20000"
    bad_alg = await send(
        gw.client, headers, url, 20_000, data[20_000:], **{"Upload-Checksum": f"crc32 {right}"}
    )
    assert bad_alg.status_code == 400


async def test_termination(gw: Gateway, alice: Who) -> None:
    _, headers = alice
    data = jpeg(30_000)
    url = await create(gw.client, headers, len(data))
    assert (await send(gw.client, headers, url, 0, data[:10_000])).status_code == 204
    assert (await gw.client.delete(url, headers={**headers, **TUS})).status_code == 204
    assert (await gw.client.head(url, headers={**headers, **TUS})).status_code == 404
    assert (await send(gw.client, headers, url, 10_000, data[10_000:])).status_code == 404
    assert url.rsplit("/", 1)[1] not in upload_dirs(gw)


@pytest.mark.parametrize("concat", ["partial", "final;/v1/uploads/a /v1/uploads/b"])
async def test_concatenation_is_refused_so_no_fragment_becomes_a_file(
    gw: Gateway, alice: Who, concat: str
) -> None:
    """tus-js-client's ``parallelUploads`` creates partial uploads (``Upload-Concat``), which a
    server without the concatenation extension would take for whole files of a fragment."""
    _, headers = alice
    answer = await gw.client.post(
        "/v1/uploads/",
        headers={
            **headers,
            **TUS,
            "Upload-Length": "1000",
            "Upload-Concat": concat,
            "Upload-Metadata": meta(filename="photo.jpg"),
        },
    )
    assert answer.status_code == 400, answer.text
    code, message = error_of(answer)
    assert code == "invalid_request" and "Upload-Concat" in message
    options = await gw.client.options("/v1/uploads/")
    assert "concatenation" not in options.headers["tus-extension"]


async def test_x_http_method_override_is_the_requests_method(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    """tus 1.0: a client that cannot send PATCH, HEAD or DELETE sends POST with
    ``X-HTTP-Method-Override``, and the server takes the header's method; a value that is not
    a tus method is refused, and changes nothing."""
    owner, headers = alice
    data = jpeg(50_000)
    url = await create(gw.client, headers, len(data))

    def post_as(method: str, **extra: str) -> dict[str, str]:
        return {**headers, **TUS, "X-HTTP-Method-Override": method, **extra}

    first = await gw.client.post(
        url, headers=post_as("PATCH", **STREAM, **{"Upload-Offset": "0"}), content=data[:20_000]
    )
    assert first.status_code == 204, first.text
    assert first.headers["upload-offset"] == "20000"
    head = await gw.client.post(url, headers=post_as("head"))
    assert head.status_code == 200 and head.headers["upload-offset"] == "20000", head.text
    bad = await gw.client.post(url, headers=post_as("PUT"))
    assert bad.status_code == 400 and error_of(bad)[0] == "invalid_request", bad.text
    assert bad.headers["tus-resumable"] == "1.0.0"
    last = await gw.client.post(
        url, headers=post_as("PATCH", **STREAM, **{"Upload-Offset": "20000"}), content=data[20_000:]
    )
    assert last.status_code == 204, last.text
    event = parse_event((await next_event(received)).body)
    assert (str(event.file_id), event.owner) == (last.headers["sluice-file-id"], owner)
    assert event.sha256 == hashlib.sha256(data).hexdigest()

    other = await create(gw.client, headers, len(data))
    ended = await gw.client.post(other, headers=post_as("DELETE"))
    assert ended.status_code == 204, ended.text
    assert (await gw.client.head(other, headers={**headers, **TUS})).status_code == 404


async def test_another_owner_gets_404(gw: Gateway, alice: Who, bob: Who) -> None:
    _, headers = alice
    _, others = bob
    data = jpeg(30_000)
    url = await create(gw.client, headers, len(data))
    assert (await gw.client.head(url, headers={**others, **TUS})).status_code == 404
    assert (await send(gw.client, others, url, 0, data)).status_code == 404
    assert (await gw.client.delete(url, headers={**others, **TUS})).status_code == 404
    assert (await gw.client.head(url, headers={**headers, **TUS})).headers["upload-offset"] == "0"
    assert (await gw.client.head(url, headers=TUS)).status_code == 401


async def test_policy_refusals(gw: Gateway, alice: Who) -> None:
    _, headers = alice
    big = await gw.client.post(
        "/v1/uploads/",
        headers={
            **headers,
            **TUS,
            "Upload-Length": str(11 * 1024 * 1024),
            "Upload-Metadata": meta(filename="big.jpg"),
        },
    )
    assert big.status_code == 413
    assert error_of(big)[0] == "too_large"
    # A PDF (5 MiB limit) named .pdf, announced at 6 MiB: refused at creation by its type.
    pdf_big = await gw.client.post(
        "/v1/uploads/",
        headers={
            **headers,
            **TUS,
            "Upload-Length": str(6 * 1024 * 1024),
            "Upload-Metadata": meta(filename="doc.pdf"),
        },
    )
    assert pdf_big.status_code == 413
    # PDF bytes under a .jpg name: refused once the first bytes come, and removed.
    data = pdf(20_000)
    url = await create(gw.client, headers, len(data), name="photo.jpg")
    answer = await send(gw.client, headers, url, 0, data)
    assert answer.status_code == 415
    code, message = error_of(answer)
    assert code == "unsupported_type"
    assert "application/pdf" in message
    assert url.rsplit("/", 1)[1] not in upload_dirs(gw)
    assert (await gw.client.head(url, headers={**headers, **TUS})).status_code == 404
    assert spool_entries(gw.spool_dir) == []


async def test_expired_upload_is_410_then_cleaned(gw: Gateway, alice: Who) -> None:
    _, headers = alice
    data = jpeg(30_000)
    url = await create(gw.client, headers, len(data))
    assert (await send(gw.client, headers, url, 0, data[:10_000])).status_code == 204
    upload_id = url.rsplit("/", 1)[1]
    store = LocalUploadStore(gw.spool_dir)
    state = await store.load(upload_id)
    assert state is not None
    past = datetime.now(UTC) - timedelta(seconds=1)
    await store.save(state.model_copy(update={"expires_at": past}))
    assert (await gw.client.head(url, headers={**headers, **TUS})).status_code == 410
    fresh = await create(gw.client, headers, len(data))
    assert upload_id in await clean_expired(store)
    assert upload_id not in upload_dirs(gw)
    assert fresh.rsplit("/", 1)[1] in upload_dirs(gw)
    assert (await gw.client.head(url, headers={**headers, **TUS})).status_code == 404


async def test_offsets_survive_a_restart(
    make_settings: MakeSettings, tmp_path: Path, alice: Who, gateway: Gateway
) -> None:
    _, headers = alice
    data = jpeg(200_000)
    settings = make_settings(tmp_path / "spool")
    async with running(settings) as first:
        url = await create(first.client, headers, len(data))
        assert (await send(first.client, headers, url, 0, data[:120_000])).status_code == 204
    async with running(settings) as second:
        head = await second.client.head(url, headers={**headers, **TUS})
        assert head.headers["upload-offset"] == "120000"
        last = await send(second.client, headers, url, 120_000, data[120_000:])
        assert last.status_code == 204
        file_id = last.headers["sluice-file-id"]
        assert (second.spool_dir / file_id).read_bytes() == data
