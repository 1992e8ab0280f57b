"""The gateway's event outbox: ``file.received`` events kept on disk while RabbitMQ is away.

When the broker does not confirm an upload's event (down, restarting, a lost confirm), the
gateway writes the event here and still answers 202; a relay
(:mod:`services.gateway.relay`) publishes the waiting events with publisher confirms once the
broker is back, oldest first, with exactly the same ``event_id`` (the stages deduplicate on it,
so an event the broker did take before its confirm was lost is handled once).

The outbox is a directory beside the spooled bytes, ``<spool dir>/.outbox/`` (a name no spool
reference can take), one file per event::

    <time_ns, 20 digits>-<event_id>.json   {"event": {...}, "headers": {...}}

Each entry is written to a ``.tmp`` name, fsynced, renamed into place and the directory fsynced
before :meth:`EventOutbox.put` returns, so an answered 202 survives a ``kill -9`` or a power
cut; a ``.tmp`` left by a crash is never read, and is removed by a later open once an hour
old. Names sort in the order the events were accepted. Keeping it on the spool's volume, not in
PostgreSQL, keeps uploads going while PostgreSQL restarts as well, and puts an event on the same
disk as the bytes it describes. Bounded by ``max_events`` (``SLUICE_GATEWAY_OUTBOX_MAX_EVENTS``):
past it, :class:`~shared.errors.OutboxFull` and the gateway answers 503.

Several gateways sharing one spool share one outbox; :meth:`EventOutbox.relay_lock` lets one
relay drain it at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.adapters.durable import fsync_directory
from shared.errors import OutboxFull, SpoolFull
from shared.events import BaseEvent, FileReceived, parse_event

#: The outbox directory's name inside the spool directory.
OUTBOX_DIR = ".outbox"
_SUFFIX = ".json"
_TMP = ".tmp"
_LOCK = ".relay.lock"
#: Age past which a ``.tmp`` is a crash's leftover, seconds.
_TMP_STALE_S = 3600


@dataclass(frozen=True)
class OutboxEntry:
    """One waiting event: its file in the outbox, the event and the AMQP headers to send."""

    path: Path
    event: BaseEvent
    headers: dict[str, Any]


def _event_id_of(name: str) -> uuid.UUID | None:
    """The event id in an entry's file name, or ``None`` for a name that is not an entry."""
    if not name.endswith(_SUFFIX):
        return None
    _, _, rest = name.removesuffix(_SUFFIX).partition("-")
    try:
        return uuid.UUID(rest)
    except ValueError:
        return None


class EventOutbox:
    """The outbox directory ``<spool dir>/.outbox``; created if missing."""

    def __init__(self, spool_dir: Path, max_events: int) -> None:
        self.root = spool_dir / OUTBOX_DIR
        self.max_events = max_events
        self.root.mkdir(parents=True, exist_ok=True)
        stale = time.time() - _TMP_STALE_S
        for leftover in self.root.glob(f"*{_TMP}"):
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < stale:  # not a put still under way
                    leftover.unlink()

    def _names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.root) if _event_id_of(n) is not None)

    def size(self) -> int:
        """Events waiting (a directory listing; cheap at the outbox's bound)."""
        return len(self._names())

    def is_empty(self) -> bool:
        """Whether no event waits (stops at the first entry found)."""
        with os.scandir(self.root) as entries:
            return not any(_event_id_of(entry.name) is not None for entry in entries)

    async def put(self, event: BaseEvent, headers: Mapping[str, Any]) -> Path:
        """Keep ``event`` (with its AMQP ``headers``) durably until the relay publishes it.

        Returns the entry's path once it is on disk (written, fsynced, renamed, directory
        fsynced).

        Raises:
            OutboxFull: ``max_events`` events already wait.
            SpoolFull: the disk is full (``ENOSPC``, ``EDQUOT``); nothing is left behind.
        """
        body = json.dumps(
            {"event": json.loads(event.model_dump_json()), "headers": dict(headers)}
        ).encode()
        return await asyncio.to_thread(self._put, event.event_id, body)

    def _put(self, event_id: uuid.UUID, body: bytes) -> Path:
        waiting = self.size()
        if waiting >= self.max_events:
            raise OutboxFull(
                f"{waiting} events already wait for RabbitMQ (limit {self.max_events})",
                limit=self.max_events,
            )
        final = self.root / f"{time.time_ns():020d}-{event_id}{_SUFFIX}"
        tmp = final.with_name(final.name + _TMP)
        try:
            with tmp.open("wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
            fsync_directory(self.root)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            free = shutil.disk_usage(self.root).free
            raise SpoolFull(
                f"the spool's disk cannot take the upload's event ({exc.strerror}): "
                f"{free} bytes free",
                free_bytes=free,
                needed_bytes=len(body),
                min_free_bytes=0,
                spool=str(self.root.parent),
            ) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    async def entries(self, limit: int | None = None) -> list[OutboxEntry]:
        """The waiting events, oldest first (at most ``limit``). An entry that cannot be read
        back (only possible if edited by hand) is skipped and left in place for a person."""
        return await asyncio.to_thread(self._entries, limit)

    def _entries(self, limit: int | None) -> list[OutboxEntry]:
        found: list[OutboxEntry] = []
        for name in self._names()[:limit]:
            path = self.root / name
            try:
                raw = json.loads(path.read_bytes())
                event = parse_event(json.dumps(raw["event"]).encode())
            except FileNotFoundError:
                continue  # published meanwhile by another relay
            except (ValueError, KeyError, TypeError):
                continue
            found.append(OutboxEntry(path, event, dict(raw.get("headers") or {})))
        return found

    async def remove(self, entry: OutboxEntry) -> None:
        """Drop a published entry (idempotent)."""
        await asyncio.to_thread(entry.path.unlink, missing_ok=True)

    async def waiting_sources(self) -> set[str]:
        """The ``source`` of every waiting ``file.received``: bytes ``sluice spool clean``
        must keep, since no stage has seen their event yet."""
        return {
            entry.event.source
            for entry in await self.entries()
            if isinstance(entry.event, FileReceived)
        }

    @contextlib.contextmanager
    def relay_lock(self) -> Iterator[bool]:
        """Try to become the one relay draining this outbox: yields ``True`` while this
        process holds the lock (``flock``, released when the block ends or the process dies),
        ``False`` if another process holds it."""
        with (self.root / _LOCK).open("a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
