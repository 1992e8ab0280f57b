"""The upload policy (seed 000) and the streaming form reader, without any service."""

from __future__ import annotations

import hashlib
import io
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.gateway.errors import ApiError
from services.gateway.form import Upload, read_upload
from shared.adapters.spool import LocalSpool
from shared.errors import PolicyRefusal
from shared.policy import (
    MAX_NAME_CHARS,
    UploadPolicy,
    clean_name,
    extension_of,
    normalise_media_type,
    sniff,
)
from shared.settings import GatewaySettings

MiB = 1024 * 1024
POLICY = UploadPolicy.from_settings(GatewaySettings())


def _image(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(out, fmt)
    return out.getvalue()


JPEG = _image("JPEG")
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"


def test_seed_000_limits_and_extensions() -> None:
    assert POLICY.hard_cap_bytes == 60 * MiB  # the largest type's: videos (seed 002)
    assert POLICY.limit_bytes("a.JPG") == 10 * MiB
    assert POLICY.limit_bytes("a.pdf") == 5 * MiB
    assert POLICY.limit_bytes("a.txt") == 60 * MiB  # unknown: the hard cap until refused
    assert POLICY.extensions == sorted(
        ["jpg", "jpeg", "png", "gif", "webp", "heic", "heif", "pdf", "mp4", "m4v", "mov", "webm"]
    )


def test_videos_have_their_own_limit_and_are_checked_by_sniffed_type() -> None:
    assert POLICY.limit_bytes("clip.MP4") == POLICY.limit_bytes("clip.webm") == 60 * MiB
    assert POLICY.check("clip.mp4", "video/mp4", "video/mp4").name == "mp4"
    assert POLICY.check("clip.mov", None, "video/quicktime").name == "mov"
    assert POLICY.check("clip.webm", "application/octet-stream", "video/webm").name == "webm"
    with pytest.raises(PolicyRefusal, match="content sniffed as video/webm but the name claims"):
        POLICY.check("clip.mp4", None, "video/webm")
    with pytest.raises(PolicyRefusal, match="content sniffed as image/jpeg"):
        POLICY.check("clip.mov", None, "image/jpeg")
    small = UploadPolicy.from_settings(GatewaySettings(max_video_bytes=MiB))
    assert small.limit_bytes("clip.mov") == MiB


def test_limits_come_from_settings() -> None:
    policy = UploadPolicy.from_settings(
        GatewaySettings(max_image_bytes=2 * MiB, max_pdf_bytes=20 * MiB, max_video_bytes=MiB)
    )
    assert policy.hard_cap_bytes == 20 * MiB
    assert policy.limit_bytes("x.png") == 2 * MiB


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (JPEG, "image/jpeg"),
        (_image("PNG"), "image/png"),
        (_image("GIF"), "image/gif"),
        (_image("WEBP"), "image/webp"),
        (PDF, "application/pdf"),
        (b"hello\n", "text/plain"),
    ],
)
def test_sniff_reads_the_bytes_not_the_name(data: bytes, expected: str) -> None:
    assert sniff(data) == expected


@pytest.mark.parametrize(
    ("name", "declared", "sniffed"),
    [
        ("a.jpg", "image/jpeg", "image/jpeg"),
        ("a.JPEG", "image/jpg", "image/jpeg"),
        ("a.jpg", None, "image/jpeg"),
        ("a.jpg", "application/octet-stream", "image/jpeg"),
        ("a.heif", "image/heic", "image/heic"),
        ("a.heic", "", "image/heif"),
        ("doc.pdf", "Application/PDF; charset=binary", "application/pdf"),
    ],
)
def test_accepted(name: str, declared: str | None, sniffed: str) -> None:
    assert POLICY.check(name, declared, sniffed) is POLICY.by_sniffed(sniffed)


@pytest.mark.parametrize(
    ("name", "declared", "sniffed", "fragments"),
    [
        ("a.jpg", None, "application/pdf", ["application/pdf", ".jpg"]),
        ("a.jpg", "image/png", "image/jpeg", ["image/png", "image/jpeg"]),
        ("a.txt", "text/plain", "text/plain", [".txt", "not accepted"]),
        ("a.jpg", None, "text/plain", ["text/plain", "not an accepted type"]),
        ("a", None, "image/jpeg", ["no extension"]),
        ("a.pdf", "image/jpeg", "application/pdf", ["image/jpeg"]),
        ("a.png", None, "image/gif", ["image/gif", ".png"]),
    ],
)
def test_refused_with_sniffed_and_claimed(
    name: str, declared: str | None, sniffed: str, fragments: list[str]
) -> None:
    with pytest.raises(PolicyRefusal) as caught:
        POLICY.check(name, declared, sniffed)
    assert caught.value.code == "unsupported_type"
    for fragment in fragments:
        assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("IMG.JPG", "jpg"),
        ("../../etc/passwd.jpg", "jpg"),
        ("C:\\x\\y.png", "png"),
        ("archive.tar.gz", "gz"),
        (".jpg", ""),
        ("noext", ""),
        ("trailing.", ""),
    ],
)
def test_extension_of(name: str, ext: str) -> None:
    assert extension_of(name) == ext


def test_normalise_media_type() -> None:
    assert normalise_media_type(" Image/JPEG ; q=1") == "image/jpeg"
    assert normalise_media_type(None) == ""


def test_clean_name_keeps_everything_but_control_characters() -> None:
    assert clean_name("../../etc/passwd.jpg") == "../../etc/passwd.jpg"
    assert clean_name("ph\x00o\x1bto \U0001f4f7\x7f\x85.jpg") == "photo \U0001f4f7.jpg"
    with pytest.raises(PolicyRefusal) as too_long:
        clean_name("a" * (MAX_NAME_CHARS + 1))
    assert too_long.value.code == "name_too_long"
    with pytest.raises(PolicyRefusal) as empty:
        clean_name("\x00\x01")
    assert empty.value.code == "invalid_request"


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("invoice\u202egpj.exe", "invoicegpj.exe"),  # RIGHT-TO-LEFT OVERRIDE: shows invoiceexe.jpg
        ("\u2067photo\u2069.jpg", "photo.jpg"),  # RIGHT-TO-LEFT ISOLATE ... POP ISOLATE
        ("\u202bfacture\u202c.pdf", "facture.pdf"),  # RIGHT-TO-LEFT EMBEDDING ... POP
        ("pho\u200bto.jpg", "photo.jpg"),  # ZERO WIDTH SPACE
        ("pho\u200cto\u200d.jpg", "photo.jpg"),  # ZERO WIDTH NON-JOINER, ZERO WIDTH JOINER
        ("\ufeffphoto.jpg", "photo.jpg"),  # BYTE ORDER MARK
        ("pho\u00adto.jpg", "photo.jpg"),  # SOFT HYPHEN
        ("a\u2028b\u2029c.jpg", "abc.jpg"),  # LINE SEPARATOR, PARAGRAPH SEPARATOR
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467.jpg", "\U0001f468\U0001f469\U0001f467.jpg"),
        (
            "r\u00e9sum\u00e9 \u0641\u0627\u062a\u0648\u0631\u0629.pdf",
            "r\u00e9sum\u00e9 \u0641\u0627\u062a\u0648\u0631\u0629.pdf",
        ),
    ],
)
def test_clean_name_drops_bidi_and_invisible_characters(raw: str, kept: str) -> None:
    assert clean_name(raw) == kept


def test_a_name_of_only_invisible_characters_is_refused() -> None:
    with pytest.raises(PolicyRefusal) as empty:
        clean_name("\u202e\u200b \u2028")
    assert empty.value.code == "invalid_request"


@given(st.text(max_size=MAX_NAME_CHARS))
def test_clean_name_never_keeps_control_or_invisible_characters(raw: str) -> None:
    try:
        name = clean_name(raw)
    except PolicyRefusal as exc:
        assert exc.code == "invalid_request"
        return
    assert name and len(name) <= MAX_NAME_CHARS
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name)
    assert name == name.strip()


# -- the form reader: policy applied while streaming --------------------------------------------


def _body(data: bytes, name: bytes = b"a.jpg", extra: bytes = b"") -> bytes:
    return (
        b'--XyZ\r\nContent-Disposition: form-data; name="kind"\r\n\r\nphoto\r\n'
        + b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="'
        + name
        + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
        + data
        + b"\r\n"
        + extra
        + b"--XyZ--\r\n"
    )


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _empty(directory: Path) -> None:
    for leftover in directory.iterdir():
        leftover.unlink()


async def _read(
    spool: LocalSpool, body: bytes, cuts: list[int], policy: UploadPolicy = POLICY
) -> Upload:
    async def chunks() -> AsyncIterator[bytes]:
        start = 0
        for cut in [*sorted(cuts), len(body)]:
            yield body[start:cut]
            start = cut

    return await read_upload(
        chunks(),
        content_type="multipart/form-data; boundary=XyZ",
        content_length=None,
        spool=spool,
        policy=policy,
        name="f1",
        max_metadata_bytes=1024,
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(min_size=0, max_size=20_000), cuts=st.lists(st.integers(0, 21_000)))
async def test_any_chunking_spools_the_same_bytes(
    tmp_path: Path, data: bytes, cuts: list[int]
) -> None:
    payload = JPEG + data
    body = _body(payload)
    spool = LocalSpool(tmp_path / "spool")
    _empty(spool.root)
    upload = await _read(spool, body, [c % len(body) for c in cuts])
    assert (upload.size_bytes, upload.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert (upload.kind, upload.content_type) == ("photo", "image/jpeg")
    assert (spool.root / "f1").read_bytes() == payload
    assert _entries(spool.root) == ["f1"]


async def test_the_limit_of_the_claimed_type_applies_while_streaming(tmp_path: Path) -> None:
    policy = UploadPolicy.from_settings(
        GatewaySettings(max_image_bytes=64_000, max_pdf_bytes=9_000)
    )
    spool = LocalSpool(tmp_path)
    body = _body(PDF + b"%" * 10_000, name=b"doc.pdf").replace(b"image/jpeg", b"application/pdf")
    with pytest.raises(ApiError) as caught:
        await _read(spool, body, list(range(0, len(body), 1000)), policy)
    assert caught.value.status_code == 413
    assert _entries(tmp_path) == []


@pytest.mark.parametrize(
    ("data", "name", "status", "code"),
    [
        (b"<html><body>hi</body></html>", b"a.jpg", 415, "unsupported_type"),
        (JPEG, b"\x01\x02", 422, "invalid_request"),
        (JPEG, b"a" * (MAX_NAME_CHARS + 1) + b".jpg", 400, "name_too_long"),
    ],
)
async def test_policy_refusals_are_answered_with_their_http_status(
    tmp_path: Path, data: bytes, name: bytes, status: int, code: str
) -> None:
    with pytest.raises(ApiError) as caught:
        await _read(LocalSpool(tmp_path), _body(data, name=name), [])
    assert (caught.value.status_code, caught.value.code) == (status, code)
    assert _entries(tmp_path) == []


async def test_a_second_file_part_is_refused(tmp_path: Path) -> None:
    second = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="b.jpg"\r\n\r\nx\r\n'
    with pytest.raises(ApiError) as caught:
        await _read(LocalSpool(tmp_path), _body(JPEG, extra=second), [])
    assert caught.value.status_code == 422
    assert _entries(tmp_path) == []


async def test_fields_after_the_file_part_are_read_too(tmp_path: Path) -> None:
    meta = b'--XyZ\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{"a": [1]}\r\n'
    other = b'--XyZ\r\nContent-Disposition: form-data; name="ignored"\r\n\r\nwhatever\r\n'
    upload = await _read(LocalSpool(tmp_path), _body(JPEG, extra=meta + other), [7, 300])
    assert upload.metadata == {"a": [1]}
    assert _entries(tmp_path) == ["f1"]
