"""The gateway's event outbox on a real directory (shared/adapters/outbox.py): what goes in
comes back oldest first and unchanged, the bound is kept, a crash's half-written entry is never
read, and one relay at a time holds the lock."""

from __future__ import annotations

import errno
import os
import time
import uuid
from pathlib import Path

import pytest

from shared.adapters.outbox import OUTBOX_DIR, EventOutbox
from shared.errors import OutboxFull, SpoolFull
from shared.events import FileReceived


def received(n: int) -> FileReceived:
    return FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source=f"spool://{uuid.uuid4()}",
        size_bytes=10 + n,
        sha256="0" * 64,
        content_type="image/jpeg",
        original_name=f"{n}.jpg",
        kind=None,
        metadata={"n": n},
    )


async def test_events_come_back_in_the_order_they_were_put_and_unchanged(tmp_path: Path) -> None:
    outbox = EventOutbox(tmp_path, max_events=100)
    events = [received(n) for n in range(20)]
    for n, event in enumerate(events):
        await outbox.put(event, {"traceparent": f"00-{n:032x}-{n:016x}-01"})
    entries = await outbox.entries()
    assert [e.event for e in entries] == events
    assert entries[3].headers == {"traceparent": f"00-{3:032x}-{3:016x}-01"}
    assert outbox.size() == 20 and not outbox.is_empty()
    assert await outbox.waiting_sources() == {e.source for e in events}
    for entry in entries[:5]:
        await outbox.remove(entry)
    assert [e.event for e in await outbox.entries(limit=2)] == events[5:7]


async def test_past_its_bound_put_raises_outbox_full_and_writes_nothing(tmp_path: Path) -> None:
    outbox = EventOutbox(tmp_path, max_events=3)
    for n in range(3):
        await outbox.put(received(n), {})
    with pytest.raises(OutboxFull, match="limit 3"):
        await outbox.put(received(9), {})
    assert sorted(os.listdir(tmp_path / OUTBOX_DIR)) == sorted(
        p.name for p in (tmp_path / OUTBOX_DIR).glob("*.json")
    )
    assert outbox.size() == 3


async def test_a_half_written_entry_is_never_read_and_old_ones_are_swept(tmp_path: Path) -> None:
    outbox = EventOutbox(tmp_path, max_events=10)
    await outbox.put(received(0), {})
    crashed = tmp_path / OUTBOX_DIR / f"{time.time_ns():020d}-{uuid.uuid4()}.json.tmp"
    crashed.write_bytes(b'{"event": {"type": "file.rec')
    in_progress = crashed.with_name(f"{time.time_ns():020d}-{uuid.uuid4()}.json.tmp")
    in_progress.write_bytes(b"{")
    assert len(await outbox.entries()) == 1 and outbox.size() == 1
    old = time.time() - 7200
    os.utime(crashed, (old, old))
    EventOutbox(tmp_path, max_events=10)  # a restart
    assert not crashed.exists()
    assert in_progress.exists()  # may be a put under way in another process


async def test_an_empty_outbox_is_empty(tmp_path: Path) -> None:
    outbox = EventOutbox(tmp_path, max_events=10)
    assert outbox.is_empty() and outbox.size() == 0 and await outbox.entries() == []
    with outbox.relay_lock():
        assert outbox.is_empty()  # the lock file is not an entry


def test_one_relay_at_a_time_holds_the_lock(tmp_path: Path) -> None:
    first, second = EventOutbox(tmp_path, 10), EventOutbox(tmp_path, 10)
    with first.relay_lock() as held:
        assert held
        with second.relay_lock() as other:
            assert not other
    with second.relay_lock() as held_after:
        assert held_after


async def test_a_full_disk_is_spool_full_and_leaves_no_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = EventOutbox(tmp_path, max_events=10)

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("shared.adapters.outbox.os.fsync", no_space)
    with pytest.raises(SpoolFull, match="No space left"):
        await outbox.put(received(0), {})
    assert os.listdir(tmp_path / OUTBOX_DIR) == []
