"""Uploads the gateway accepts, against the real PostgreSQL, RabbitMQ and SeaweedFS: each is
spooled, announced as ``file.received`` and answered 202; every type of the policy is taken;
a file name is kept as a name, never used as a path; a large upload streams in flat memory."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractQueue
from PIL import Image

from shared.events import FileReceived, parse_event
from tests.integration.gateway.support import (
    Gateway,
    MiB,
    Who,
    error_of,
    jpeg,
    multipart,
    next_event,
    pdf,
    png,
    spool_entries,
    tree,
    upload,
)

pytestmark = pytest.mark.integration


async def test_upload_is_spooled_published_and_accepted(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    owner, headers = alice
    data = jpeg(300_000)
    response = await upload(
        gw, headers, "holiday.jpg", data, "image/jpeg", kind="avatar", metadata='{"album": "x"}'
    )

    assert response.status_code == 202, response.text
    body = response.json()
    file_id = body["file_id"]
    assert body == {
        "file_id": file_id,
        "status": "received",
        "status_url": f"/v1/files/{file_id}",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "content_type": "image/jpeg",
        "original_name": "holiday.jpg",
        "version_number": 1,
    }
    assert response.headers["location"] == f"/v1/files/{file_id}"
    message = await next_event(received)
    event = parse_event(message.body)
    assert isinstance(event, FileReceived)
    assert message.message_id == str(event.event_id)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert str(event.file_id) == file_id
    assert (event.owner, event.original_name, event.kind) == (owner, "holiday.jpg", "avatar")
    assert event.metadata == {"album": "x"}
    assert event.sha256 == hashlib.sha256(data).hexdigest() and event.size_bytes == len(data)
    assert event.content_type == "image/jpeg" and event.source == f"spool://{file_id}"
    assert spool_entries(gw.spool_dir) == [file_id]
    assert (gw.spool_dir / file_id).read_bytes() == data


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("scan.pdf", pdf(4 * MiB), "application/pdf"),
        ("pic.PNG", png(), "image/png"),
        ("pic.jpeg", jpeg(), "image/jpg"),
        ("pic.gif", None, "image/gif"),
        ("pic.webp", None, "image/webp"),
        ("pic.heic", None, "image/heic"),
    ],
)
async def test_every_policy_type_is_accepted(
    gw: Gateway, alice: Who, name: str, data: bytes | None, content_type: str
) -> None:
    if data is None:
        fmt = {"gif": "GIF", "webp": "WEBP", "heic": "HEIF"}[name.rsplit(".", 1)[1]]
        if fmt == "HEIF":
            import pillow_heif

            pillow_heif.register_heif_opener()
        out = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 200, 30)).save(out, fmt)
        data = out.getvalue()
    response = await upload(gw, alice[1], name, data, content_type)
    assert response.status_code == 202, response.text


async def test_traversal_name_is_kept_as_a_name_never_used_as_a_path(
    gw: Gateway, received: AbstractQueue, alice: Who, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.getbasetemp()
    before = tree(root)
    data = jpeg()

    response = await upload(gw, alice[1], "../../etc/passwd.jpg", data, "image/jpeg")

    assert response.status_code == 202, response.text
    file_id = response.json()["file_id"]
    event = parse_event((await next_event(received)).body)
    assert event.original_name == "../../etc/passwd.jpg"
    assert tree(root) - before == {str((gw.spool_dir / file_id).relative_to(root))}
    assert not (gw.spool_dir / "../../etc/passwd.jpg").exists()


async def test_nul_and_control_characters_are_dropped_from_names_emoji_kept(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    raw_name = "ph\x00o\x1bto \U0001f4f7\x7f.jpg".encode()
    body, headers = multipart([(b"file", raw_name, b"image/jpeg", jpeg())])

    response = await gw.client.post("/v1/files", headers={**alice[1], **headers}, content=body)

    assert response.status_code == 202, response.text
    assert response.json()["original_name"] == "photo \U0001f4f7.jpg"
    event = parse_event((await next_event(received)).body)
    assert event.original_name == "photo \U0001f4f7.jpg"


async def test_bidi_and_zero_width_characters_are_dropped_from_names(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    body, headers = multipart(
        [(b"file", "pho\u200bto\u200d\u2028 \u2067v2\u2069.jpg".encode(), b"image/jpeg", jpeg())]
    )
    kept = await gw.client.post("/v1/files", headers={**alice[1], **headers}, content=body)
    assert kept.status_code == 202, kept.text
    assert kept.json()["original_name"] == "photo v2.jpg"
    assert parse_event((await next_event(received)).body).original_name == "photo v2.jpg"

    # Shown as "invoiceexe.jpg" by anything that honours the override; kept as what it is.
    body, headers = multipart([(b"file", "invoice\u202egpj.exe".encode(), b"image/jpeg", jpeg())])
    spoofed = await gw.client.post("/v1/files", headers={**alice[1], **headers}, content=body)
    assert spoofed.status_code == 415
    code, message = error_of(spoofed)
    assert code == "unsupported_type" and "file type .exe is not accepted" in message
    assert spool_entries(gw.spool_dir) == [kept.json()["file_id"]]


@pytest.mark.parametrize(
    "disposition",
    [
        # urllib3 before 2.0, for a name that is not ASCII: the extended notation alone.
        b"form-data; name=\"file\"; filename*=utf-8''%E7%85%A7%E7%89%87%20v2.jpg",
        # .NET's MultipartFormDataContent: an RFC 2047 fallback, then filename* (RFC 6266).
        b'form-data; name="file"; filename="=?utf-8?B?54Wn54mHIHYyLmpwZw==?="; '
        b"filename*=utf-8''%E7%85%A7%E7%89%87%20v2.jpg",
    ],
)
async def test_a_filename_in_rfc_5987_notation_is_the_files_name(
    gw: Gateway, received: AbstractQueue, alice: Who, disposition: bytes
) -> None:
    data = jpeg()
    body = (
        b"--sLuIcE\r\nContent-Disposition: " + disposition + b"\r\n"
        b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n--sLuIcE--\r\n"
    )
    headers = {**alice[1], "Content-Type": "multipart/form-data; boundary=sLuIcE"}
    response = await gw.client.post("/v1/files", headers=headers, content=body)
    assert response.status_code == 202, response.text
    assert response.json()["original_name"] == "\u7167\u7247 v2.jpg"
    event = parse_event((await next_event(received)).body)
    assert event.original_name == "\u7167\u7247 v2.jpg"


async def test_names_over_1024_characters_are_400(gw: Gateway, alice: Who) -> None:
    fits = await upload(gw, alice[1], "\U0001f4f7" * 1020 + ".jpg", jpeg(), "image/jpeg")
    assert fits.status_code == 202, fits.text
    too_long = await upload(gw, alice[1], "a" * 1021 + ".jpg", jpeg(), "image/jpeg")
    assert too_long.status_code == 400
    assert error_of(too_long)[0] == "name_too_long"


async def test_a_large_upload_streams_with_flat_memory(
    gw: Gateway, received: AbstractQueue, alice: Who
) -> None:
    size = int(9.5 * MiB)
    chunk = os.urandom(64 * 1024)
    head = jpeg()
    boundary = b"sLuIcE"
    opening = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"'
        b"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    digest = hashlib.sha256(head)

    async def body() -> AsyncIterator[bytes]:
        yield opening + head
        left = size - len(head)
        while left > 0:
            piece = chunk[: min(left, len(chunk))]
            digest.update(piece)
            left -= len(piece)
            yield piece
        yield b"\r\n--" + boundary + b"--\r\n"

    headers = {**alice[1], "Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        response = await gw.client.post("/v1/files", headers=headers, content=body())
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert response.status_code == 202, response.text
    assert response.json()["size_bytes"] == size
    assert response.json()["sha256"] == digest.hexdigest()
    assert (gw.spool_dir / response.json()["file_id"]).stat().st_size == size
    print(f"peak {peak / MiB:.2f} MiB")
    assert peak < 2 * MiB, f"peak Python allocation {peak / MiB:.1f} MiB for a 9.5 MiB upload"
