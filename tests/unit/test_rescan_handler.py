"""The scan stage's rescans (``services/scan/rescan.py``) with an in-memory store and scanner:
the verdicts, the move to ``_quarantine/`` and its checks, and redeliveries."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from services.scan.rescan import SIGNATURE_METADATA, rescan
from shared.adapters.scanner import ScanVerdict
from shared.adapters.storage import ObjectInfo
from shared.errors import ChecksumMismatch, SourceMissing
from shared.events import FileQuarantined, FileRescanned, FileRescanRequested

INFECTED = b"later-signature"
KEY = "alice/0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a01-20250301T123005Z-a.png"
THUMBS = [f"{KEY}.thumb-256.webp", f"{KEY}.thumb-1024.jpg"]
#: What other stages and the gateway make from the original, all named ``{KEY}.…``, sorted.
DERIVED = sorted(
    [
        f"{KEY}.hls/master.m3u8",
        f"{KEY}.hls/360p_00000.ts",
        f"{KEY}.poster-256.webp",
        f"{KEY}.render-100xauto-inside.webp",
        f"{KEY}.text.txt",
    ]
)
#: Another file's object whose key starts like this one's, but not with ``{KEY}.``.
NEIGHBOUR = f"{KEY}x.thumb-256.webp"


@dataclass
class Scanner:
    async def scan(self, data: bytes) -> ScanVerdict:
        if INFECTED in data:
            return ScanVerdict(clean=False, signature="Sluice.Test.Later")
        return ScanVerdict(clean=True)

    async def version(self) -> tuple[str, str]:
        return ("ClamAV 1.4.3", "27500/Tue Dec  1 09:00:00 2026")


@dataclass
class Store:
    """A bucket in memory, the local backend's way (a checked write, no server-side copy)."""

    bucket: str = "sluice"
    objects: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    damage_copies: bool = False

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo | None:
        if key not in self.objects:
            return None
        data, metadata = self.objects[key]
        return ObjectInfo(key, len(data), None, content_type="image/png", metadata=metadata)

    async def get_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        if key not in self.objects:
            raise SourceMissing("no such object", key=key)
        data = self.objects[key][0]
        return data[:-1] if self.damage_copies and key.startswith("_quarantine/") else data

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        sha256_hex: str,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        assert hashlib.sha256(data).hexdigest() == sha256_hex
        self.objects[key] = (data, dict(metadata or {}))

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def list_objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key][0]), None)


def request(original: bytes) -> FileRescanRequested:
    return FileRescanRequested.about(
        {
            "file_id": uuid.UUID("0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a01"),
            "owner": "alice",
            "received_at": datetime(2025, 3, 1, 12, 30, 5, tzinfo=UTC),
            "source": "spool://0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a01",
            "size_bytes": len(original),
            "sha256": hashlib.sha256(original).hexdigest(),
            "content_type": "image/png",
            "original_name": "a.png",
        },
        bucket="sluice",
        key=KEY,
        thumbnail_keys=THUMBS,
        rescan_id=uuid.UUID("7d8f4a51-5a8e-4f7b-8c1e-3f1a2b3c4d5e"),
    )


def stored(original: bytes) -> Store:
    store = Store()
    store.objects[KEY] = (original, {"sha256": hashlib.sha256(original).hexdigest()})
    for key in (*THUMBS, *DERIVED, NEIGHBOUR):
        store.objects[key] = (key.encode(), {})
    return store


async def test_a_clean_rescan_records_the_versions_and_moves_nothing() -> None:
    store = stored(b"png bytes")
    [event] = await rescan(request(b"png bytes"), store, Scanner())
    assert isinstance(event, FileRescanned)
    assert (event.scanner, event.signature_version.split("/")[0]) == ("ClamAV 1.4.3", "27500")
    assert set(store.objects) == {KEY, *THUMBS, *DERIVED, NEIGHBOUR}


async def test_an_infected_file_moves_whole_to_quarantine_and_nothing_is_lost() -> None:
    original = b"png bytes " + INFECTED
    store = stored(original)
    before = {key: data for key, (data, _) in store.objects.items() if key != NEIGHBOUR}
    [event] = await rescan(request(original), store, Scanner())
    assert isinstance(event, FileQuarantined)
    assert event.signature == "Sluice.Test.Later"
    # The original, its thumbnails, then what else was made from it; not the neighbour's.
    assert event.quarantine_keys == [f"_quarantine/{k}" for k in (KEY, *THUMBS, *DERIVED)]
    assert set(store.objects) == {*event.quarantine_keys, NEIGHBOUR}
    for key, data in before.items():
        moved, metadata = store.objects[f"_quarantine/{key}"]
        assert moved == data
        assert metadata[SIGNATURE_METADATA] == "Sluice.Test.Later"


async def test_a_redelivery_after_a_partial_move_finishes_it_with_the_same_event() -> None:
    original = b"png bytes " + INFECTED
    store = stored(original)
    [first] = await rescan(request(original), store, Scanner())
    # As if the first attempt had died after moving the original only:
    store.objects[THUMBS[1]] = store.objects.pop(f"_quarantine/{THUMBS[1]}")
    store.objects[DERIVED[0]] = store.objects.pop(f"_quarantine/{DERIVED[0]}")
    [again] = await rescan(request(original), store, Scanner())
    assert again.event_id == first.event_id
    assert isinstance(again, FileQuarantined) and again.signature == "Sluice.Test.Later"
    assert again.quarantine_keys == first.quarantine_keys  # the same objects named
    assert set(store.objects) == {*first.quarantine_keys, NEIGHBOUR}


async def test_an_original_gone_and_not_in_quarantine_is_dead_lettered() -> None:
    store = stored(b"x")
    del store.objects[KEY]
    with pytest.raises(SourceMissing):
        await rescan(request(b"x"), store, Scanner())


async def test_stored_bytes_that_are_not_the_version_are_not_rescanned() -> None:
    store = stored(b"other bytes " + INFECTED)
    with pytest.raises(ChecksumMismatch):
        await rescan(request(b"png bytes"), store, Scanner())
    assert set(store.objects) == {KEY, *THUMBS, *DERIVED, NEIGHBOUR}


async def test_a_copy_that_does_not_read_back_whole_is_removed_and_the_original_kept() -> None:
    original = b"png bytes " + INFECTED
    store = stored(original)
    store.damage_copies = True
    with pytest.raises(ChecksumMismatch, match="does not read back"):
        await rescan(request(original), store, Scanner())
    assert set(store.objects) == {KEY, *THUMBS, *DERIVED, NEIGHBOUR}
