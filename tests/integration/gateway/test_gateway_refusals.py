"""Uploads the gateway refuses by its policy (seed 000: images up to 10 MB, PDF up to 5 MB,
MIME type and extension checked together) and malformed requests: each answer names the
error, and nothing is left in the spool."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import pytest

from tests.integration.gateway.support import (
    Gateway,
    MiB,
    Who,
    error_of,
    jpeg,
    multipart,
    pdf,
    spool_entries,
    upload,
)

pytestmark = pytest.mark.integration


async def test_over_the_hard_cap_is_413_and_leaves_nothing(gw: Gateway, alice: Who) -> None:
    response = await upload(gw, alice[1], "big.jpg", jpeg(10 * MiB + 1), "image/jpeg")

    assert response.status_code == 413
    assert error_of(response)[0] == "too_large"
    assert spool_entries(gw.spool_dir) == []  # no file, no .partial


async def test_a_streamed_body_without_length_is_cut_at_the_limit(gw: Gateway, alice: Who) -> None:
    head, headers = multipart([(b"file", b"big.jpg", b"image/jpeg", jpeg())])
    opening, closing = head.split(b"\r\n--sLuIcE--")
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield opening[:-2]
        for _ in range(40):  # 40 x 512 KiB = 20 MiB offered
            sent += 512 * 1024
            yield b"\0" * (512 * 1024)
        yield b"\r\n--sLuIcE--" + closing

    response = await gw.client.post("/v1/files", headers={**alice[1], **headers}, content=body())
    assert response.status_code == 413
    assert sent <= 11 * MiB  # answered as soon as the limit was passed, not at the end
    assert spool_entries(gw.spool_dir) == []


async def test_pdf_limit_is_5_mib_while_a_6_mib_jpeg_is_fine(gw: Gateway, alice: Who) -> None:
    too_big = await upload(gw, alice[1], "doc.pdf", pdf(5 * MiB + 1), "application/pdf")
    assert too_big.status_code == 413
    assert "5.0 MiB" in error_of(too_big)[1]
    assert spool_entries(gw.spool_dir) == []

    fits = await upload(gw, alice[1], "doc.pdf", pdf(5 * MiB), "application/pdf")
    assert fits.status_code == 202, fits.text
    photo = await upload(gw, alice[1], "photo.jpg", jpeg(6 * MiB), "image/jpeg")
    assert photo.status_code == 202, photo.text
    assert len(spool_entries(gw.spool_dir)) == 2


@pytest.mark.parametrize(
    ("name", "data", "content_type", "says"),
    [
        ("cv.jpg", pdf(), "application/octet-stream", ["application/pdf", ".jpg"]),
        ("photo.jpg", jpeg(), "image/png", ["image/jpeg", "image/png"]),
        ("notes.txt", b"just some text\n" * 10, "text/plain", [".txt", "text/plain"]),
        ("blob.bin", os.urandom(4096), "application/octet-stream", [".bin"]),
        ("photo", jpeg(), "image/jpeg", ["no extension"]),
        ("fake.png", b"GIF89a" + bytes(64), "image/png", ["image/gif", ".png"]),
        ("page.pdf", b"<html><body>hi</body></html>", "application/pdf", ["text/html"]),
    ],
)
async def test_type_mismatches_are_415_naming_sniffed_and_claimed(
    gw: Gateway, alice: Who, name: str, data: bytes, content_type: str, says: list[str]
) -> None:
    response = await upload(gw, alice[1], name, data, content_type)

    assert response.status_code == 415, response.text
    code, message = error_of(response)
    assert code == "unsupported_type"
    for fragment in says:
        assert fragment in message
    assert spool_entries(gw.spool_dir) == []


async def test_empty_file_is_400(gw: Gateway, alice: Who) -> None:
    response = await upload(gw, alice[1], "empty.jpg", b"", "image/jpeg")
    assert response.status_code == 400
    assert error_of(response) == ("empty_file", "empty file: the `file` part has no bytes")
    assert spool_entries(gw.spool_dir) == []


async def test_missing_file_field_is_422_and_not_multipart_is_415(gw: Gateway, alice: Who) -> None:
    no_file = await gw.client.post("/v1/files", headers=alice[1], files={"kind": (None, "x")})
    assert no_file.status_code == 422
    assert "missing `file` field" in error_of(no_file)[1]

    as_json = await gw.client.post("/v1/files", headers=alice[1], json={"file": "x"})
    assert as_json.status_code == 415
    assert error_of(as_json)[0] == "not_multipart"

    body, headers = multipart([(b"file", b"a.jpg", b"image/jpeg", jpeg())])
    truncated = await gw.client.post(
        "/v1/files", headers={**alice[1], **headers}, content=body[: len(body) // 2]
    )
    assert truncated.status_code == 400
    assert error_of(truncated)[0] == "malformed_multipart"
    assert spool_entries(gw.spool_dir) == []


async def test_bad_form_fields(gw: Gateway, alice: Who) -> None:
    cases = [
        ({"metadata": "[1, 2]"}, 422, "JSON object"),
        ({"metadata": "{not json"}, 422, "not valid JSON"),
        ({"metadata": '{"a": NaN}'}, 422, "not valid JSON"),
        ({"metadata": '{"a": "\\u0000"}'}, 422, "NUL"),
        ({"metadata": json.dumps({"a": "x" * 20_000})}, 413, "metadata"),
        ({"kind": "k" * 65}, 422, "kind"),
    ]
    for fields, status, fragment in cases:
        response = await upload(gw, alice[1], "a.jpg", jpeg(), "image/jpeg", **fields)
        assert response.status_code == status, (fields, response.text)
        assert fragment in error_of(response)[1]
    assert spool_entries(gw.spool_dir) == []
