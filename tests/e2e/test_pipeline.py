"""The pipeline end to end, against real RabbitMQ, PostgreSQL, SeaweedFS and clamd.

One ``sluice run`` process (every stage and the gateway) on a fresh database, topology and
bucket; files go in over HTTP and the test checks what a user would: the final status, the bytes
in the bucket, the thumbnails, the rows and the stage history.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pillow_heif
import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from shared import devservices
from shared.adapters.broker import event_message
from shared.events import FileReceived
from shared.topology import Topology
from tests.e2e.pipeline import ROOT, Pipeline, queue_depths, start_pipeline

SAMPLES = ROOT / "samples"
IMAGE_SAMPLES = ["photo-rotated.jpg", "photo.png", "animation.gif", "photo.webp", "photo.heic"]
HISTORY = ["file.received", "file.scanned", "file.stored", "file.thumbnailed", "file.committed"]

pytestmark = pytest.mark.e2e
pillow_heif.register_heif_opener()


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp_path_factory.mktemp("e2e"), "e2e")


@pytest.fixture(scope="module")
def s3() -> Any:
    return devservices.s3_client()


def upload(pipeline: Pipeline, name: str, data: bytes, owner: str = "alice") -> str:
    with pipeline.client(owner) as client:
        answer = client.post("/v1/files", files={"file": (name, data)})
    assert answer.status_code == 202, answer.text
    file_id: str = answer.json()["file_id"]
    return file_id


def version_row(pipeline: Pipeline, file_id: str) -> dict[str, Any]:
    rows = pipeline.sql(
        "SELECT status, bucket, object_key, thumbnails, thumbnail_error, sha256, size_bytes"
        " FROM file_versions WHERE file_id = %s",
        file_id,
    )
    assert len(rows) == 1, f"expected one version row, got {rows}"
    keys = ("status", "bucket", "object_key", "thumbnails", "thumbnail_error", "sha256", "size")
    return dict(zip(keys, rows[0], strict=True))


def history(pipeline: Pipeline, file_id: str) -> list[str]:
    rows = pipeline.sql(
        "SELECT event_type FROM file_events WHERE file_id = %s ORDER BY occurred_at", file_id
    )
    return [row[0] for row in rows]


def get_object(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def upright(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.seek(0)
        return ImageOps.exif_transpose(image.convert("RGB"))


@pytest.fixture(scope="module")
def samples_done(pipeline: Pipeline) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every sample uploaded by alice and followed to its final status."""
    ids = {
        p.name: upload(pipeline, p.name, p.read_bytes())
        for p in sorted(SAMPLES.iterdir())
        if p.suffix != ".md"
    }
    return {name: (file_id, pipeline.wait_final(file_id)) for name, file_id in ids.items()}


def test_every_sample_reaches_its_final_status(
    pipeline: Pipeline, samples_done: dict[str, Any]
) -> None:
    statuses = {name: info["status"] for name, (_, info) in samples_done.items()}
    expected = {name: "rejected" if name.startswith("eicar") else "available" for name in statuses}
    assert statuses == expected
    # The last file.committed publish happens just after the status flips: poll for it.
    empty = dict.fromkeys(Topology(prefix="e2e").all_queues(), 0)
    deadline = time.monotonic() + 10
    while (depths := queue_depths(pipeline)) != empty and time.monotonic() < deadline:
        time.sleep(0.1)
    assert depths == empty


@pytest.mark.parametrize("name", [*IMAGE_SAMPLES, "document.pdf"])
def test_bucket_holds_exactly_the_uploaded_bytes(
    pipeline: Pipeline, s3: Any, samples_done: dict[str, Any], name: str
) -> None:
    file_id, _ = samples_done[name]
    row = version_row(pipeline, file_id)
    local = (SAMPLES / name).read_bytes()
    stored = get_object(s3, row["bucket"], row["object_key"])
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(local).hexdigest() == row["sha256"]
    assert row["object_key"].startswith(f"alice/{file_id}-")
    assert history(pipeline, file_id) == HISTORY
    with pipeline.client() as client:
        content = client.get(f"/v1/files/{file_id}/content")
    assert content.status_code == 200
    assert content.content == local


@pytest.mark.parametrize("name", IMAGE_SAMPLES)
def test_thumbnails_decode_with_the_right_size_no_exif_and_upright(
    pipeline: Pipeline, s3: Any, samples_done: dict[str, Any], name: str
) -> None:
    file_id, _ = samples_done[name]
    row = version_row(pipeline, file_id)
    assert row["thumbnail_error"] is None
    reference = upright(SAMPLES / name)
    assert sorted(t["size_px"] for t in row["thumbnails"]) == [256, 1024]
    for thumb in row["thumbnails"]:
        data = get_object(s3, row["bucket"], thumb["key"])
        image = Image.open(io.BytesIO(data))
        # the 1024 px preview is a JPEG, but for the PNG with its transparent corners
        jpeg = thumb["size_px"] == 1024 and name != "photo.png"
        content_type, fmt, ext = (
            ("image/jpeg", "JPEG", "jpg") if jpeg else ("image/webp", "WEBP", "webp")
        )
        assert (thumb["content_type"], image.format) == (content_type, fmt)
        assert thumb["key"].endswith(f".thumb-{thumb['size_px']}.{ext}")
        head = s3.head_object(Bucket=row["bucket"], Key=thumb["key"])
        assert head["ContentType"] == content_type
        image.load()
        assert max(image.size) == min(thumb["size_px"], max(reference.size))
        assert (image.width >= image.height) == (reference.width >= reference.height)
        assert not image.getexif(), "thumbnail carries EXIF"
        assert "exif" not in image.info and "xmp" not in image.info
        expected = reference.resize(image.size)
        diff = ImageStat.Stat(ImageChops.difference(image.convert("RGB"), expected)).mean
        assert sum(diff) / 3 < 12, f"thumbnail does not look like the upright photo: {diff}"


def test_rotated_jpeg_thumbnail_is_not_the_raw_orientation(
    pipeline: Pipeline, s3: Any, samples_done: dict[str, Any]
) -> None:
    file_id, _ = samples_done["photo-rotated.jpg"]
    row = version_row(pipeline, file_id)
    thumb = next(t for t in row["thumbnails"] if t["size_px"] == 256)
    image = Image.open(io.BytesIO(get_object(s3, row["bucket"], thumb["key"]))).convert("RGB")
    with Image.open(SAMPLES / "photo-rotated.jpg") as raw:
        assert raw.getexif().get(0x0112, 1) != 1, "sample lost its orientation tag"
        raw_size = raw.size
    assert image.size != tuple(round(s * 256 / max(raw_size)) for s in raw_size)


def test_eicar_is_rejected_and_never_reaches_the_bucket(
    pipeline: Pipeline, s3: Any, samples_done: dict[str, Any]
) -> None:
    file_id, info = samples_done["eicar.pdf"]
    assert info["status"] == "rejected"
    assert "Eicar" in (info["status_reason"] or "")
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=pipeline.bucket)
        for item in page.get("Contents", [])
    ]
    assert keys, "the bucket should hold the other samples"
    assert not [key for key in keys if file_id in key]
    assert not (pipeline.spool_dir / file_id).exists()
    assert history(pipeline, file_id) == ["file.received", "file.rejected", "file.committed"]


def test_non_image_has_no_thumbnails(pipeline: Pipeline, samples_done: dict[str, Any]) -> None:
    file_id, info = samples_done["document.pdf"]
    row = version_row(pipeline, file_id)
    assert row["thumbnails"] == [] and row["thumbnail_error"] is None
    assert info["status"] == "available"


def test_spool_is_emptied_once_files_are_committed(
    pipeline: Pipeline, samples_done: dict[str, Any]
) -> None:
    for file_id, _ in samples_done.values():
        assert not (pipeline.spool_dir / file_id).exists()


def test_another_owner_gets_404(pipeline: Pipeline, samples_done: dict[str, Any]) -> None:
    file_id, _ = samples_done["photo.png"]
    with pipeline.client("bob") as client:
        assert client.get(f"/v1/files/{file_id}").status_code == 404
        assert client.get(f"/v1/files/{file_id}/content").status_code == 404
    with pipeline.client("alice") as client:
        assert client.get(f"/v1/files/{file_id}").status_code == 200


def test_status_shows_history_checksum_and_presigned_urls(
    pipeline: Pipeline, samples_done: dict[str, Any]
) -> None:
    file_id, info = samples_done["photo.webp"]
    assert [row["type"] for row in info["history"]] == HISTORY
    assert info["object_key"] == version_row(pipeline, file_id)["object_key"]
    assert info["sha256"] == hashlib.sha256((SAMPLES / "photo.webp").read_bytes()).hexdigest()
    import httpx

    original = httpx.get(info["urls"]["original"], timeout=10)
    assert original.status_code == 200
    assert original.content == (SAMPLES / "photo.webp").read_bytes()
    assert info["thumbnails"] and all(
        httpx.get(t["url"], timeout=10).status_code == 200 for t in info["thumbnails"]
    )


def test_truncated_jpeg_is_stored_without_thumbnails(pipeline: Pipeline, s3: Any) -> None:
    whole = (SAMPLES / "photo-rotated.jpg").read_bytes()
    truncated = whole[: len(whole) // 2]
    file_id = upload(pipeline, "truncated.jpg", truncated)
    info = pipeline.wait_final(file_id)
    assert info["status"] == "available"
    row = version_row(pipeline, file_id)
    assert row["thumbnails"] == []
    assert row["thumbnail_error"] and "truncat" in row["thumbnail_error"].lower()
    assert get_object(s3, row["bucket"], row["object_key"]) == truncated


@pytest.mark.parametrize(
    "name", ["../../etc/passwd.jpg", "evil\x00name.jpg", "photo 😀 été.jpg", "a" * 300 + ".jpg"]
)
def test_hostile_file_names_are_kept_as_names_never_as_paths(
    pipeline: Pipeline, s3: Any, name: str
) -> None:
    data = (SAMPLES / "photo-rotated.jpg").read_bytes()
    file_id = upload(pipeline, name, data)
    info = pipeline.wait_final(file_id)
    assert info["status"] == "available"
    row = version_row(pipeline, file_id)
    key: str = row["object_key"]
    assert key.startswith(f"alice/{file_id}-")
    segment = key.removeprefix("alice/")
    assert "/" not in segment and "\x00" not in segment and ".." not in segment
    assert len(segment.encode()) <= 200
    assert get_object(s3, row["bucket"], key) == data


def _pdf_bytes() -> bytes:
    return (SAMPLES / "document.pdf").read_bytes()


BAD_UPLOADS = {
    "over-size": (
        "big.jpg",
        lambda: b"\xff\xd8\xff\xe0" + b"\0" * (11 * 1024 * 1024),
        "alice",
        413,
    ),
    "jpg-that-is-a-pdf": ("photo.jpg", _pdf_bytes, "alice", 415),
    "empty": ("empty.jpg", lambda: b"", "alice", 400),
    "no-key": ("photo.jpg", lambda: (SAMPLES / "photo-rotated.jpg").read_bytes(), None, 401),
}


@pytest.mark.parametrize("case", [*BAD_UPLOADS, "wrong-key"])
def test_bad_uploads_get_a_clear_error_and_leave_nothing(
    pipeline: Pipeline, s3: Any, samples_done: dict[str, Any], case: str
) -> None:
    def inventory() -> tuple[set[str], int, int]:
        spool = (
            {p.name for p in pipeline.spool_dir.iterdir()} if pipeline.spool_dir.exists() else set()
        )
        objects = sum(
            len(page.get("Contents", []))
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=pipeline.bucket)
        )
        return spool, objects, pipeline.sql("SELECT count(*) FROM file_events")[0][0]

    before = inventory()
    if case == "wrong-key":
        import httpx

        answer = httpx.post(
            f"{pipeline.url}/v1/files",
            files={"file": ("photo.jpg", (SAMPLES / "photo-rotated.jpg").read_bytes())},
            headers={"Authorization": "Bearer slk_not-a-real-key"},
        )
        expected_status = 401
    else:
        name, make, owner, expected_status = BAD_UPLOADS[case]
        with pipeline.client(owner) as client:
            answer = client.post("/v1/files", files={"file": (name, make())})
    assert answer.status_code == expected_status, answer.text
    assert answer.json()["error"]["message"]
    assert inventory() == before


async def _publish(prefix: str, event: FileReceived) -> None:
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(f"{prefix}.events")
        await exchange.publish(event_message(event), routing_key=event.routing_key, timeout=30)


def test_upstream_service_publishes_file_received_with_an_s3_source(
    pipeline: Pipeline, s3: Any
) -> None:
    """An upstream service that wrote the bytes publishes `file.received` (docs/events.md)."""
    data = (SAMPLES / "photo.png").read_bytes()
    upstream_bucket = f"{pipeline.bucket}-upstream"
    s3.put_object(Bucket=upstream_bucket, Key="incoming/cat.png", Body=data)
    event = FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source=f"s3://{upstream_bucket}/incoming/cat.png",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/png",
        original_name="cat.png",
        kind="upstream",
    )
    asyncio.run(_publish(pipeline.prefix, event))
    info = pipeline.wait_final(str(event.file_id))
    assert info["status"] == "available"
    row = version_row(pipeline, str(event.file_id))
    assert get_object(s3, row["bucket"], row["object_key"]) == data
    assert row["bucket"] == pipeline.bucket
    assert len(row["thumbnails"]) == 2
    assert get_object(s3, upstream_bucket, "incoming/cat.png") == data
