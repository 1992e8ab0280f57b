"""The spool's disk space: the free-space floor (``SLUICE_SPOOL_MIN_FREE_BYTES``) checked before
a file is opened, and a full disk met while writing, both ending in 507 with nothing left.

A full disk is the kernel's own: a ``.partial`` name that is a symbolic link to ``/dev/full``,
whose every write fails with ``ENOSPC``. The floors are set far above or below the machine's
free space, so the answers do not depend on what else is on the disk.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from services.gateway.errors import ApiError
from services.gateway.form import read_upload
from shared.adapters.spool import WRITE_BATCH_BYTES, LocalSpool, size_text
from shared.errors import SpoolFull
from shared.policy import UploadPolicy
from shared.settings import GatewaySettings

POLICY = UploadPolicy.from_settings(GatewaySettings())
#: More bytes than any disk here has.
HUGE = 2**60


def _jpeg(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(out, "JPEG")
    data = out.getvalue()
    return data + os.urandom(max(0, size - len(data)))


def _body(data: bytes) -> bytes:
    return (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n--XyZ--\r\n"
    )


async def _read(
    spool: LocalSpool,
    body: bytes,
    content_length: str | None = None,
    policy: UploadPolicy = POLICY,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    await read_upload(
        chunks(),
        content_type="multipart/form-data; boundary=XyZ",
        content_length=content_length,
        spool=spool,
        policy=policy,
        name="f1",
        max_metadata_bytes=1024,
    )


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _full_disk_under(spool: LocalSpool, name: str = "f1") -> None:
    (spool.root / f"{name}.partial").symlink_to("/dev/full")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1536, "1.5 KiB"),
        (3 * 2**20, "3.0 MiB"),
        (5 * 2**29, "2.5 GiB"),
    ],
)
def test_sizes_read_as_a_person_would_say_them(size: int, text: str) -> None:
    assert size_text(size) == text


async def test_a_floor_above_the_free_space_refuses_and_says_how_much(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path, min_free_bytes=HUGE)
    with pytest.raises(SpoolFull) as caught:
        await spool.open_writer("f1", expected_bytes=2**20)
    error = caught.value
    free = shutil.disk_usage(tmp_path).free
    assert abs(error.context["free_bytes"] - free) < 2**30
    assert error.context["needed_bytes"] == 2**20
    assert error.context["min_free_bytes"] == HUGE
    assert error.message.startswith("the spool has ")
    assert "this upload needs 1.0 MiB and 1073741824.0 GiB must stay free" in error.message
    assert _names(tmp_path) == []


async def test_without_a_floor_only_the_expected_size_counts(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path, min_free_bytes=0)
    assert await spool.check_room(0) > 0
    with pytest.raises(SpoolFull) as caught:
        await spool.check_room(HUGE)
    assert "must stay free" not in caught.value.message
    async with await spool.open_writer("f1", expected_bytes=3) as writer:
        await writer.write(b"abc")
        await writer.commit()
    assert (tmp_path / "f1").read_bytes() == b"abc"


async def test_the_form_is_answered_507_before_its_body_is_spooled(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path, min_free_bytes=HUGE)
    with pytest.raises(ApiError) as caught:
        await _read(spool, _body(_jpeg(4096)))
    assert (caught.value.status_code, caught.value.code) == (507, "insufficient_storage")
    assert caught.value.message.endswith("; try again later")
    assert caught.value.headers == {"Retry-After": "5"}
    assert _names(tmp_path) == []


async def test_a_content_length_bigger_than_the_disk_is_refused_a_short_body_is_not(
    tmp_path: Path,
) -> None:
    roomy = UploadPolicy.from_settings(GatewaySettings(max_image_bytes=HUGE))
    spool = LocalSpool(tmp_path, min_free_bytes=0)
    body = _body(_jpeg(4096))
    with pytest.raises(ApiError) as caught:
        await _read(spool, body, content_length=str(HUGE), policy=roomy)
    assert caught.value.status_code == 507
    assert _names(tmp_path) == []

    await _read(spool, body, content_length=str(len(body)), policy=roomy)
    assert _names(tmp_path) == ["f1"]


async def test_a_disk_full_while_writing_removes_the_partial_file(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path, min_free_bytes=0)
    _full_disk_under(spool)
    writer = await spool.open_writer("f1")
    with pytest.raises(SpoolFull) as caught:
        await writer.write(b"\0" * WRITE_BATCH_BYTES)  # a whole batch: written at once
    assert "No space left on device" in caught.value.message
    assert f"the upload needed more than {size_text(WRITE_BATCH_BYTES)}" in caught.value.message
    assert _names(tmp_path) == []


async def test_a_disk_full_at_the_flush_removes_the_partial_file(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path, min_free_bytes=0)
    _full_disk_under(spool)
    async with await spool.open_writer("f1") as writer:
        await writer.write(b"abc")  # buffered: the disk says no when it is flushed
        with pytest.raises(SpoolFull):
            await writer.commit()
    assert _names(tmp_path) == []


async def test_a_disk_full_mid_upload_is_507_and_leaves_nothing(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path, min_free_bytes=0)
    _full_disk_under(spool)
    with pytest.raises(ApiError) as caught:
        await _read(spool, _body(_jpeg(512 * 1024)))
    assert (caught.value.status_code, caught.value.code) == (507, "insufficient_storage")
    assert "filled up during the upload" in caught.value.message
    assert _names(tmp_path) == []
