"""What the stages check of an event (``shared.claims``), and the thumbnail stage refusing an
event that names an object the event's owner does not own, before it reads anything."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from services.thumbnail import handler as thumbnail
from shared.claims import check_owner, check_stored_object, own_spool_entry
from shared.errors import ForgedEvent
from shared.events import FileReceived, FileScanned, FileStored, FileThumbnailed, Thumbnail
from shared.naming import object_key, thumbnail_key
from shared.ports import ObjectInfo
from shared.settings import ThumbnailSettings

FILE_ID = uuid.UUID("0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a01")
DATA = b"\x89PNG\r\n\x1a\n not really a png"


def received(owner: str = "mallory", **fields: Any) -> FileReceived:
    return FileReceived.new(
        **{
            "file_id": FILE_ID,
            "owner": owner,
            "received_at": datetime(2025, 3, 1, 12, 30, 5, tzinfo=UTC),
            "source": f"spool://{FILE_ID}",
            "size_bytes": len(DATA),
            "sha256": hashlib.sha256(DATA).hexdigest(),
            "content_type": "image/png",
            "original_name": "photo.png",
            **fields,
        }
    )


def stored(event: FileReceived, bucket: str = "sluice", key: str | None = None) -> FileStored:
    own = object_key(event.owner, event.file_id, event.received_at, event.original_name)
    scanned = event.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="1")
    return scanned.follow(FileStored, bucket=bucket, key=key or own)


def test_the_files_own_object_passes() -> None:
    event = stored(received())
    assert event.key == f"mallory/{FILE_ID}-20250301T123005Z-photo.png"
    check_stored_object(event, "sluice")
    thumbs = (
        Thumbnail(size_px=256, key=thumbnail_key(event.key, 256), width=1, height=1, size_bytes=1),
    )
    check_stored_object(
        event.follow(FileThumbnailed, bucket=event.bucket, key=event.key, thumbnails=thumbs),
        "sluice",
    )


def test_a_thumbnail_key_must_carry_its_content_types_extension() -> None:
    event = stored(received())

    def thumbnailed(key: str, content_type: Any) -> FileThumbnailed:
        thumb = Thumbnail(
            size_px=1024, key=key, width=1, height=1, size_bytes=1, content_type=content_type
        )
        return event.follow(
            FileThumbnailed, bucket=event.bucket, key=event.key, thumbnails=(thumb,)
        )

    check_stored_object(thumbnailed(event.key + ".thumb-1024.jpg", "image/jpeg"), "sluice")
    check_stored_object(thumbnailed(event.key + ".thumb-1024.webp", "image/webp"), "sluice")
    with pytest.raises(ForgedEvent, match=r"names thumbnail key '.*\.thumb-1024\.webp', not"):
        check_stored_object(thumbnailed(event.key + ".thumb-1024.webp", "image/jpeg"), "sluice")


def test_another_owners_key_is_forged() -> None:
    alice = received("alice")
    theft = stored(received(), key=stored(alice).key)
    with pytest.raises(ForgedEvent) as caught:
        check_stored_object(theft, "sluice")
    assert str(caught.value).startswith(
        f"file.stored of owner 'mallory' names key 'alice/{FILE_ID}-20250301T123005Z-photo.png', "
        f"not the file's key 'mallory/{FILE_ID}-20250301T123005Z-photo.png'"
    )
    assert caught.value.context["file_id"] == str(FILE_ID)


def test_a_foreign_bucket_is_forged() -> None:
    with pytest.raises(ForgedEvent, match="names bucket 'upstream', not Sluice's bucket 'sluice'"):
        check_stored_object(stored(received(), bucket="upstream"), "sluice")


def test_owner_must_be_the_recorded_one() -> None:
    event = received()
    check_owner(event, None)  # not recorded yet
    check_owner(event, "mallory")
    with pytest.raises(ForgedEvent, match="of owner 'mallory' is about a file of owner 'alice'"):
        check_owner(event, "alice")


def test_only_spool_file_id_is_the_files_own_entry() -> None:
    assert own_spool_entry(received())
    assert not own_spool_entry(received(source=f"spool://{uuid.uuid4()}"))
    assert not own_spool_entry(received(source=f"spool://{FILE_ID}.bin"))
    assert not own_spool_entry(received(source=f"s3://sluice/{FILE_ID}"))


# -- the thumbnail stage -----------------------------------------------------------------------


@dataclass
class RecordingStore:
    """A bucket in memory that records every read and write."""

    bucket: str = "sluice"
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    touched: list[tuple[str, str, str]] = field(default_factory=list)

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo | None:
        self.touched.append(("head", bucket or self.bucket, key))
        return None

    async def get_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        self.touched.append(("get", bucket or self.bucket, key))
        return self.objects[(bucket or self.bucket, key)]

    async def put_bytes(self, key: str, data: bytes, **_: Any) -> None:
        self.touched.append(("put", self.bucket, key))


def thumbnail_deps(store: RecordingStore) -> thumbnail.Deps:
    return thumbnail.Deps(
        storage=store,  # type: ignore[arg-type]
        settings=ThumbnailSettings(),
        renders=asyncio.Semaphore(1),
    )


@pytest.mark.parametrize(
    ("bucket", "key"),
    [("upstream", None), ("sluice", f"alice/{FILE_ID}-20250301T123005Z-photo.png")],
)
async def test_thumbnail_refuses_an_object_that_is_not_the_files_own(
    bucket: str, key: str | None
) -> None:
    store = RecordingStore(objects={(bucket, key or "x"): DATA})
    with pytest.raises(ForgedEvent):
        await thumbnail.handle(stored(received(), bucket=bucket, key=key), thumbnail_deps(store))
    assert store.touched == []  # nothing read, nothing written


async def test_thumbnail_of_a_non_image_names_only_its_own_object() -> None:
    store = RecordingStore()
    pdf = received(original_name="doc.pdf", content_type="application/pdf")
    with pytest.raises(ForgedEvent):
        await thumbnail.handle(stored(pdf, key="alice/doc.pdf"), thumbnail_deps(store))
    [out] = await thumbnail.handle(stored(pdf), thumbnail_deps(store))
    assert isinstance(out, FileThumbnailed) and out.thumbnails == ()
