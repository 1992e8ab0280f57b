"""The spool: a local (or shared-volume) directory where uploaded bytes wait until stored.

A spool reference is ``spool://<name>``, ``<name>`` a single path segment of letters, digits,
``.``, ``_`` and ``-`` (no separators, so a reference can never leave the spool directory).
Writes go to ``<name>.partial`` and are renamed into place only when complete, so a reader
never sees half a file and an aborted upload leaves nothing behind.

When the gateway cannot get ``file.received`` confirmed it answers 503 and *abandons* the file:
the bytes go and an empty ``<name>.abandoned`` tombstone stays. If the broker did take the event
after all (the confirm was lost with the connection), the scan stage finds the tombstone and
rejects the file as abandoned instead of dead-lettering a missing source.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

from shared.errors import InvalidSource, SourceMissing

SCHEME = "spool://"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class SpoolWriter:
    """Writes one spooled file while hashing it; :meth:`commit` publishes it under its name.

    Use as an async context manager: leaving it without :meth:`commit` (an error, a size limit)
    removes the partial file.
    """

    def __init__(self, final: Path) -> None:
        self._final = final
        self._partial = final.with_name(final.name + ".partial")
        self._sha256 = hashlib.sha256()
        self.size_bytes = 0
        self._committed = False
        self._handle = self._partial.open("wb")

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (written off the event loop) and update the size and SHA-256."""
        self._sha256.update(chunk)
        self.size_bytes += len(chunk)
        await asyncio.to_thread(self._handle.write, chunk)

    @property
    def sha256(self) -> str:
        """SHA-256 of what was written so far, lowercase hex."""
        return self._sha256.hexdigest()

    async def commit(self) -> None:
        """Flush, fsync and rename the partial file into place."""

        def _finish() -> None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(self._partial, self._final)

        await asyncio.to_thread(_finish)
        self._committed = True

    async def abort(self) -> None:
        """Close and remove the partial file (idempotent)."""
        if not self._handle.closed:
            self._handle.close()
        self._partial.unlink(missing_ok=True)

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
    """The spool directory; the one real implementation of the spool port."""

    def __init__(self, root: Path, chunk_bytes: int = 256 * 1024) -> None:
        self.root = root
        self.chunk_bytes = chunk_bytes
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def reference(name: str) -> str:
        """The source reference of spooled file ``name`` (``spool://<name>``)."""
        return SCHEME + name

    def path(self, source: str) -> Path:
        """The local path of a ``spool://`` reference.

        Raises:
            InvalidSource: not a spool reference, or a name that could escape the directory.
        """
        if not source.startswith(SCHEME):
            raise InvalidSource("not a spool reference", source=source)
        name = source.removeprefix(SCHEME)
        if not _NAME.fullmatch(name) or name.endswith((".partial", ".abandoned")):
            raise InvalidSource("spool name not allowed", source=source)
        return self.root / name

    def writer(self, name: str) -> SpoolWriter:
        """A writer for a new spooled file ``name``.

        Raises:
            InvalidSource: ``name`` is not a valid spool name.
        """
        return SpoolWriter(self.path(self.reference(name)))

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
