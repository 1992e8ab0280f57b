"""The spool: a local (or shared-volume) directory where uploaded bytes wait until stored.

A spool reference is ``spool://<name>``, ``<name>`` a single path segment of letters, digits,
``.``, ``_`` and ``-`` (no separators, so a reference can never leave the spool directory).
Writes go to ``<name>.partial`` and are renamed into place only when complete, so a reader
never sees half a file and an aborted upload leaves nothing behind.

When the gateway cannot get ``file.received`` confirmed it answers 503 and *abandons* the file:
the bytes go and an empty ``<name>.abandoned`` tombstone stays. If the broker did take the event
after all (the confirm was lost with the connection), the scan stage finds the tombstone and
rejects the file as abandoned instead of dead-lettering a missing source.

Disk space: :meth:`LocalSpool.open_writer` refuses a new file with :class:`SpoolFull` when the
disk's free space minus the upload's expected size would go below ``min_free_bytes``
(``SLUICE_SPOOL_MIN_FREE_BYTES``), and a write, flush, fsync or rename that fails with
``ENOSPC`` or ``EDQUOT`` removes the partial file and raises :class:`SpoolFull` too. Nothing is
kept between checks, so uploads are taken again as soon as space returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

from shared.adapters.durable import fsync_directory
from shared.errors import InvalidSource, SourceMissing, SpoolFull
from shared.telemetry.metrics import SPOOL_FREE_BYTES

SCHEME = "spool://"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: The suffix of an upload the gateway refused (its tombstone), and of one being written.
ABANDONED, PARTIAL = ".abandoned", ".partial"


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a spooled file: one segment of letters, digits, ``.``, ``_``
    and ``-`` (at most 200), not ending ``.partial`` or ``.abandoned``; the same for both
    backends, so a reference can never leave the spool directory or name a tombstone."""
    return bool(_NAME.fullmatch(name)) and not name.endswith((PARTIAL, ABANDONED))


#: What ``write(2)``, ``fsync(2)`` or ``rename(2)`` answer when the disk (or the quota) is full.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def size_text(size: int) -> str:
    """``size`` bytes for a person: ``"512 bytes"``, ``"3.2 MiB"``, ``"1.5 GiB"``."""
    if size < 1024:
        return f"{size} bytes"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1024:.1f} KiB"


#: A :class:`SpoolWriter` holds chunks until this many bytes, then hashes and writes them in
#: one worker-thread call: one thread hop per 512 KiB instead of one per body chunk (64 KiB),
#: the gateway's largest cost per small upload after the HTTP parsing (docs/performance.md).
#: The chunks are written as they are (no joined copy), so an upload holds at most this much.
WRITE_BATCH_BYTES = 512 * 1024


class SpoolWriter:
    """Writes one spooled file while hashing it; :meth:`commit` publishes it under its name.

    Chunks are held in memory up to :data:`WRITE_BATCH_BYTES`, then hashed and written together
    in a worker thread (hashlib and ``write(2)`` release the GIL), so an upload of at most that
    size costs one thread hop, at :meth:`commit`, with its fsync and rename.

    Use as an async context manager: leaving it without :meth:`commit` (an error, a size limit)
    removes the partial file.

    Raises:
        SpoolFull: the disk is full (``ENOSPC``, ``EDQUOT``) when the partial file is created.
    """

    def __init__(self, final: Path) -> None:
        self._final = final
        self._partial = final.with_name(final.name + ".partial")
        self._sha256 = hashlib.sha256()
        self.size_bytes = 0
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._committed = False
        try:
            self._handle = self._partial.open("wb")
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            self._partial.unlink(missing_ok=True)
            raise self._full(exc) from exc

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``: held, and with what is held once that passes
        :data:`WRITE_BATCH_BYTES`, hashed and written off the event loop. ``chunk`` is kept,
        not copied, until then: an immutable ``bytes``, never a buffer the caller reuses.

        Raises:
            SpoolFull: the disk filled up (``ENOSPC``, ``EDQUOT``); the partial file is gone.
        """
        self.size_bytes += len(chunk)
        self._held.append(chunk)
        self._held_bytes += len(chunk)
        if self._held_bytes >= WRITE_BATCH_BYTES:
            await self._off_loop(self._put, self._take())

    def _take(self) -> list[bytes]:
        """The held chunks, no longer held."""
        held, self._held, self._held_bytes = self._held, [], 0
        return held

    def _put(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._sha256.update(chunk)
        self._handle.writelines(chunks)

    async def _off_loop(self, work: Callable[[list[bytes]], None], data: list[bytes]) -> None:
        """``work(data)`` in a worker thread; a full disk removes the partial file.

        Raises:
            SpoolFull: ``ENOSPC`` or ``EDQUOT``.
        """
        try:
            await asyncio.to_thread(work, data)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            await self.abort()
            raise await asyncio.to_thread(self._full, exc) from exc

    @property
    def sha256(self) -> str:
        """SHA-256 of the file, lowercase hex, once :meth:`commit` has returned (before, of
        the bytes written to disk so far)."""
        return self._sha256.hexdigest()

    async def commit(self) -> None:
        """Write what is held, flush, fsync and rename the partial file into place (one
        worker-thread call).

        Raises:
            SpoolFull: the disk filled up (``ENOSPC``, ``EDQUOT``); the partial file is gone.
        """

        def _finish(data: list[bytes]) -> None:
            self._put(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(self._partial, self._final)
            fsync_directory(self._final.parent)  # the new name is durable too (POSIX)

        await self._off_loop(_finish, self._take())
        self._committed = True

    async def abort(self) -> None:
        """Drop what is held, close and remove the partial file (idempotent)."""
        self._held, self._held_bytes = [], 0
        if not self._handle.closed:
            # Closing flushes the buffer, which fails again on a full disk; the file goes anyway.
            with contextlib.suppress(OSError):
                self._handle.close()
        self._partial.unlink(missing_ok=True)

    def _full(self, exc: OSError) -> SpoolFull:
        """The error for a write the disk refused (reads the free space: call off the loop)."""
        spool = self._final.parent
        free = shutil.disk_usage(spool).free
        needed = f", the upload needed more than {size_text(self.size_bytes)}"
        return SpoolFull(
            f"the spool's disk filled up during the upload ({exc.strerror}): "
            f"{size_text(free)} free" + (needed if self.size_bytes else ""),
            free_bytes=free,
            needed_bytes=self.size_bytes,
            min_free_bytes=0,
            spool=str(spool),
        )

    async def __aenter__(self) -> SpoolWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            await self.abort()


class LocalSpool:
    """The spool directory (``SLUICE_SPOOL_BACKEND=local``, the default): one of the two
    implementations of the :class:`~shared.ports.Spool` port (the other is the S3 quarantine
    bucket, :class:`shared.adapters.quarantine.QuarantineSpool`).

    ``min_free_bytes`` is the free-space floor of :meth:`check_room`, in bytes
    (``SLUICE_SPOOL_MIN_FREE_BYTES``; only the gateway, which writes the spool, sets it).
    """

    def __init__(self, root: Path, chunk_bytes: int = 256 * 1024, min_free_bytes: int = 0) -> None:
        self.root = root
        self.chunk_bytes = chunk_bytes
        self.min_free_bytes = min_free_bytes
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def reference(name: str) -> str:
        """The source reference of spooled file ``name`` (``spool://<name>``)."""
        return SCHEME + name

    @staticmethod
    def owns(source: str) -> bool:
        """Whether ``source`` is a ``spool://`` reference."""
        return source.startswith(SCHEME)

    def path(self, source: str) -> Path:
        """The local path of a ``spool://`` reference.

        Raises:
            InvalidSource: not a spool reference, or a name that could escape the directory.
        """
        if not source.startswith(SCHEME):
            raise InvalidSource("not a spool reference", source=source)
        name = source.removeprefix(SCHEME)
        if not valid_name(name):
            raise InvalidSource("spool name not allowed", source=source)
        return self.root / name

    def writer(self, name: str) -> SpoolWriter:
        """A writer for a new spooled file ``name``, without the free-space check of
        :meth:`open_writer`.

        Raises:
            InvalidSource: ``name`` is not a valid spool name.
            SpoolFull: the disk is full.
        """
        return SpoolWriter(self.path(self.reference(name)))

    async def free_bytes(self) -> int:
        """Free bytes on the spool's disk (``shutil.disk_usage``, off the event loop); also
        sets the ``sluice_spool_free_bytes`` gauge."""
        free = (await asyncio.to_thread(shutil.disk_usage, self.root)).free
        SPOOL_FREE_BYTES.set(free)
        return free

    async def check_room(self, expected_bytes: int = 0) -> int:
        """The free bytes, if a file of ``expected_bytes`` (0 when unknown) leaves at least
        ``min_free_bytes`` free.

        Raises:
            SpoolFull: free space minus ``expected_bytes`` would go below ``min_free_bytes``.
        """
        free = await self.free_bytes()
        if free - expected_bytes >= self.min_free_bytes:
            return free
        floor = (
            f" and {size_text(self.min_free_bytes)} must stay free" if self.min_free_bytes else ""
        )
        raise SpoolFull(
            f"the spool has {size_text(free)} free; this upload needs {size_text(expected_bytes)}"
            + floor,
            free_bytes=free,
            needed_bytes=expected_bytes,
            min_free_bytes=self.min_free_bytes,
            spool=str(self.root),
        )

    async def open_writer(self, name: str, expected_bytes: int = 0) -> SpoolWriter:
        """A writer for a new spooled file ``name`` of ``expected_bytes`` (0 when unknown),
        once :meth:`check_room` has found room for it (the file is opened off the event loop).

        Raises:
            InvalidSource: ``name`` is not a valid spool name.
            SpoolFull: no room (the floor), or the disk is full.
        """
        path = self.path(self.reference(name))
        await self.check_room(expected_bytes)
        return await asyncio.to_thread(SpoolWriter, path)

    async def read_bytes(self, source: str) -> bytes:
        """The whole spooled file.

        Raises:
            SourceMissing: it is not there (already cleaned up, never written).
            InvalidSource: bad reference.
        """
        path = self.path(source)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise SourceMissing("spooled file is gone", source=source) from None

    async def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        """The spooled file in ``chunk_bytes`` chunks (read off the event loop).

        Raises:
            SourceMissing: it is not there.
        """
        path = self.path(source)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise SourceMissing("spooled file is gone", source=source) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, self.chunk_bytes):
                yield chunk
        finally:
            handle.close()

    async def size(self, source: str) -> int:
        """The spooled file's size, bytes (``stat``).

        Raises:
            SourceMissing: it is not there. InvalidSource: bad reference.
        """
        path = self.path(source)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise SourceMissing("spooled file is gone", source=source) from None

    async def promote(
        self,
        source: str,
        *,
        bucket: str,
        key: str,
        sha256_hex: str,
        size_bytes: int,
        content_type: str,
    ) -> bool:
        """``False``: a local directory has no server-side copy; the store stage reads the
        bytes and uploads them."""
        self.path(source)
        return False

    async def exists(self, source: str) -> bool:
        """Whether the spooled file is there."""
        return await asyncio.to_thread(self.path(source).is_file)

    async def delete(self, source: str) -> bool:
        """Remove the spooled file and any tombstone; ``False`` if the bytes were already gone."""
        path = self.path(source)
        await asyncio.to_thread(self._tombstone(path).unlink, missing_ok=True)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def abandon(self, source: str) -> None:
        """Remove the bytes of an upload that was refused, leaving a ``.abandoned`` tombstone."""
        path = self.path(source)
        await asyncio.to_thread(self._tombstone(path).touch)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def is_abandoned(self, source: str) -> bool:
        """Whether the upload behind ``source`` was refused by the gateway (tombstone present)."""
        return await asyncio.to_thread(self._tombstone(self.path(source)).is_file)

    @staticmethod
    def _tombstone(path: Path) -> Path:
        return path.with_name(path.name + ".abandoned")
