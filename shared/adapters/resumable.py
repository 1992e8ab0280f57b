"""Unfinished resumable uploads (tus 1.0, ``/v1/uploads/``), kept in the spool's own area so
their offsets survive a gateway restart and, with the S3 spool, any gateway can resume them.

Each upload has a *state* (owner, length, metadata, expiry; once complete, the file it became)
and its *chunks*: one per accepted ``PATCH``, named by the offset it starts at. The offset of an
upload is where its contiguous chunks end, read from the listing, so a crash between writing a
chunk and anything else cannot make the two disagree.

============  ====================================================  ==========================
spool         state                                                 chunk at offset N
============  ====================================================  ==========================
local         ``<SLUICE_SPOOL_DIR>/.tus/<id>/state.json``           ``.tus/<id>/<N:020d>.chunk``
s3            ``s3://<quarantine bucket>/tus/<id>/state.json``      ``tus/<id>/<N:020d>.chunk``
============  ====================================================  ==========================

A chunk appears whole or not at all: written to ``.partial`` and renamed (local, with
:class:`~shared.adapters.spool.SpoolWriter`), or one ``PutObject`` / a multipart upload
completed at the end (S3, with :class:`~shared.adapters.quarantine.QuarantineWriter`). S3
multipart parts must be at least 5 MiB except the last, so a tus ``PATCH`` of any size cannot
be a part of one growing object; one object per ``PATCH`` is the layout that works with any
client's chunk size. On completion the gateway streams the chunks in order through the spool's
ordinary writer (``Spool.open_writer``), which hashes the whole, then removes the chunks.

Two requests on one upload at once are refused by :meth:`UploadStore.lock`: an in-process lock,
and with the local spool an ``flock`` on ``.tus/<id>/.lock`` (every gateway on the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.adapters.quarantine import (
    RESUMABLE_PREFIX,
    QuarantineSpool,
    QuarantineWriter,
    quarantine_errors,
)
from shared.adapters.spool import PARTIAL, SpoolWriter
from shared.errors import SluiceError, SourceMissing
from shared.ports import SpoolWriter as SpoolWriterPort

#: The local spool's directory of unfinished uploads, and the quarantine bucket's key prefix.
LOCAL_DIR, S3_PREFIX = ".tus", RESUMABLE_PREFIX
STATE, CHUNK = "state.json", ".chunk"
_ID = re.compile(r"^[0-9a-f]{32}$")


class UploadBusy(SluiceError):
    """Another request holds the upload (answered 409)."""


class UploadState(BaseModel):
    """What is kept of one upload between requests (``state.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upload_id: str = Field(pattern=_ID.pattern, description="The URL's id; also the file id.")
    owner: str = Field(description="Owner of the key that created it.")
    length: int = Field(ge=1, description="Upload-Length, bytes.")
    metadata: str = Field(description="Upload-Metadata as sent (HEAD echoes it).")
    created_at: datetime
    expires_at: datetime
    event_id: str = Field(
        description="The file.received event's id, fixed at creation so that a completion "
        "retried after a crash publishes the same event (the stages deduplicate on it)."
    )
    content_type: str | None = Field(None, description="Sniffed once the first bytes came.")
    sha256: str | None = Field(None, description="Set once complete and announced.")
    file_id: str | None = Field(
        None,
        description="For a new version of a recorded file (``file_id`` in Upload-Metadata): "
        "that file's id, checked to be the owner's at creation; None for a new file, whose "
        "id is the upload's.",
    )
    version_number: int | None = Field(
        None, ge=1, description="The version the upload became, once complete."
    )

    @property
    def target_file_id(self) -> uuid.UUID:
        """The file the upload becomes, or becomes a new version of."""
        return uuid.UUID(self.file_id or self.upload_id)

    @property
    def complete(self) -> bool:
        """Whether the file was spooled whole and ``file.received`` is safe."""
        return self.sha256 is not None

    def expired(self, now: datetime | None = None) -> bool:
        """Whether ``expires_at`` has passed."""
        return (now or datetime.now(UTC)) >= self.expires_at


def contiguous_end(chunks: list[tuple[int, int]]) -> int:
    """Where the chunks ``(offset, size)``, sorted, stop being contiguous from 0, bytes.

    >>> contiguous_end([(0, 5), (5, 3), (20, 1)])
    8
    """
    end = 0
    for offset, size in chunks:
        if offset != end:
            break
        end += size
    return end


class UploadStore(Protocol):
    """Where unfinished uploads live (module docstring): :class:`LocalUploadStore` or
    :class:`S3UploadStore`. ``upload_id`` is 32 lowercase hex digits (a UUID)."""

    async def save(self, state: UploadState) -> None:
        """Write (or replace) the state, atomically."""
        ...

    async def load(self, upload_id: str) -> UploadState | None:
        """The state, or ``None`` if there is no such upload."""
        ...

    async def chunks(self, upload_id: str) -> list[tuple[int, int]]:
        """The chunks ``(offset, size)``, sorted by offset."""
        ...

    async def open_chunk(self, upload_id: str, offset: int) -> SpoolWriterPort:
        """A writer of the chunk starting at ``offset``; it appears only at ``commit``."""
        ...

    def iter_bytes(self, upload_id: str) -> AsyncIterator[bytes]:
        """The contiguous chunks' bytes, in order."""
        ...

    async def delete(self, upload_id: str) -> None:
        """Remove the upload: state and chunks (idempotent)."""
        ...

    async def delete_chunks(self, upload_id: str) -> None:
        """Remove the chunks, keep the state (a complete upload's)."""
        ...

    async def ids(self) -> list[str]:
        """Every upload id there is."""
        ...

    def lock(self, upload_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the upload for one request. Raises :class:`UploadBusy` at once if held."""
        ...


async def read_head(store: UploadStore, upload_id: str, limit: int) -> bytes:
    """The first ``limit`` bytes already received (fewer if fewer came)."""
    head = bytearray()
    async for chunk in store.iter_bytes(upload_id):
        head += chunk[: limit - len(head)]
        if len(head) >= limit:
            break
    return bytes(head)


async def clean_expired(store: UploadStore, now: datetime | None = None) -> list[str]:
    """Remove every expired upload (complete or not), and any left without a state; the ids
    removed."""
    removed = []
    for upload_id in await store.ids():
        state = await store.load(upload_id)
        if state is None or state.expired(now):
            await store.delete(upload_id)
            removed.append(upload_id)
    return removed


class _Held:
    """The in-process half of :meth:`UploadStore.lock`."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    @contextlib.contextmanager
    def hold(self, upload_id: str) -> Iterator[None]:
        if upload_id in self._held:
            raise UploadBusy("another request on this upload is in progress", upload=upload_id)
        self._held.add(upload_id)
        try:
            yield
        finally:
            self._held.discard(upload_id)


def _chunk_name(offset: int) -> str:
    return f"{offset:020d}{CHUNK}"


def _check_id(upload_id: str) -> str:
    if not _ID.fullmatch(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return upload_id


class LocalUploadStore:
    """Unfinished uploads under ``<spool dir>/.tus/`` (the local spool)."""

    def __init__(self, spool_dir: Path, chunk_bytes: int = 256 * 1024) -> None:
        self.root = spool_dir / LOCAL_DIR
        self.chunk_bytes = chunk_bytes
        self._held = _Held()

    def _dir(self, upload_id: str) -> Path:
        return self.root / _check_id(upload_id)

    async def save(self, state: UploadState) -> None:
        """Write ``state.json`` to a temporary name, fsync, rename."""
        folder = self._dir(state.upload_id)

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / (STATE + PARTIAL)
            with temporary.open("w") as handle:
                handle.write(state.model_dump_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, folder / STATE)

        await asyncio.to_thread(write)

    async def load(self, upload_id: str) -> UploadState | None:
        """The state, or ``None``."""
        path = self._dir(upload_id) / STATE
        try:
            text = await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            return None
        return UploadState.model_validate_json(text)

    async def chunks(self, upload_id: str) -> list[tuple[int, int]]:
        """``(offset, size)`` of each ``*.chunk``, sorted."""
        folder = self._dir(upload_id)

        def listing() -> list[tuple[int, int]]:
            if not folder.is_dir():
                return []
            found = [(int(p.name[: -len(CHUNK)]), p.stat().st_size) for p in folder.glob("*.chunk")]
            return sorted(found)

        return await asyncio.to_thread(listing)

    async def open_chunk(self, upload_id: str, offset: int) -> SpoolWriter:
        """A :class:`~shared.adapters.spool.SpoolWriter` of ``<offset>.chunk``.

        Raises:
            SpoolFull: the disk is full.
        """
        path = self._dir(upload_id) / _chunk_name(offset)
        return await asyncio.to_thread(SpoolWriter, path)

    async def iter_bytes(self, upload_id: str) -> AsyncIterator[bytes]:
        """The contiguous chunks, read in ``chunk_bytes`` pieces.

        Raises (on iteration): SourceMissing: a chunk went away meanwhile.
        """
        folder = self._dir(upload_id)
        end = 0
        for offset, _size in await self.chunks(upload_id):
            if offset != end:
                break
            try:
                handle = await asyncio.to_thread((folder / _chunk_name(offset)).open, "rb")
            except FileNotFoundError:
                raise SourceMissing("an upload chunk is gone", upload=upload_id) from None
            with handle:
                while piece := await asyncio.to_thread(handle.read, self.chunk_bytes):
                    end += len(piece)
                    yield piece

    async def delete(self, upload_id: str) -> None:
        """Remove the upload's directory."""
        folder = self._dir(upload_id)

        def remove() -> None:
            for path in folder.glob("*"):
                if path.name != STATE:
                    path.unlink(missing_ok=True)
            (folder / STATE).unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError, OSError):
                folder.rmdir()

        await asyncio.to_thread(remove)

    async def delete_chunks(self, upload_id: str) -> None:
        """Remove ``*.chunk`` and partial files, keep ``state.json``."""
        folder = self._dir(upload_id)

        def remove() -> None:
            for path in folder.glob("*.chunk*"):
                path.unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def ids(self) -> list[str]:
        """The upload directories' names."""

        def listing() -> list[str]:
            if not self.root.is_dir():
                return []
            return sorted(p.name for p in self.root.iterdir() if _ID.fullmatch(p.name))

        return await asyncio.to_thread(listing)

    @contextlib.asynccontextmanager
    async def lock(self, upload_id: str) -> AsyncIterator[None]:
        """In this process, then across processes of the host (``flock`` on ``.lock``, not
        waited for).

        Raises:
            UploadBusy: another request holds it.
        """
        folder = self._dir(upload_id)
        with self._held.hold(upload_id):

            def take() -> int | None:
                if not folder.is_dir():
                    return None
                fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise UploadBusy(
                        "another request on this upload is in progress", upload=upload_id
                    ) from None
                return fd

            fd = await asyncio.to_thread(take)
            try:
                yield
            finally:
                if fd is not None:
                    os.close(fd)


class S3UploadStore:
    """Unfinished uploads under ``tus/`` in the quarantine bucket (the S3 spool).

    Raises (every method): QuarantineUnavailable: S3 down.
    """

    def __init__(self, quarantine: QuarantineSpool) -> None:
        self.quarantine = quarantine
        self.storage = quarantine.storage
        self._held = _Held()

    @staticmethod
    def _prefix(upload_id: str) -> str:
        return f"{S3_PREFIX}{_check_id(upload_id)}/"

    async def save(self, state: UploadState) -> None:
        """One ``PutObject`` of ``state.json`` (S3 applies it whole)."""
        data = state.model_dump_json().encode()
        key = self._prefix(state.upload_id) + STATE
        with quarantine_errors():
            await self.storage.put_bytes(
                key,
                data,
                sha256_hex=hashlib.sha256(data).hexdigest(),
                content_type="application/json",
            )

    async def load(self, upload_id: str) -> UploadState | None:
        """The state, or ``None``."""
        key = self._prefix(upload_id) + STATE
        try:
            with quarantine_errors():
                data = await self.storage.get_bytes(key)
        except SourceMissing:
            return None
        return UploadState.model_validate_json(data)

    async def _keys(self, prefix: str) -> list[tuple[str, int]]:
        with quarantine_errors():
            return [(item.key, item.size_bytes) async for item in self.storage.list_objects(prefix)]

    async def chunks(self, upload_id: str) -> list[tuple[int, int]]:
        """``(offset, size)`` of each ``*.chunk`` object, sorted."""
        prefix = self._prefix(upload_id)
        return sorted(
            (int(key[len(prefix) : -len(CHUNK)]), size)
            for key, size in await self._keys(prefix)
            if key.endswith(CHUNK)
        )

    async def open_chunk(self, upload_id: str, offset: int) -> QuarantineWriter:
        """A :class:`~shared.adapters.quarantine.QuarantineWriter` of the chunk object."""
        key = self._prefix(upload_id) + _chunk_name(offset)
        quarantine = self.quarantine
        return QuarantineWriter(
            quarantine,
            key,
            quarantine.part_size_bytes,
            single_put_max=quarantine.single_put_max_bytes,
        )

    async def iter_bytes(self, upload_id: str) -> AsyncIterator[bytes]:
        """The contiguous chunk objects, streamed.

        Raises (on iteration): SourceMissing: a chunk went away meanwhile.
        """
        prefix = self._prefix(upload_id)
        end = 0
        for offset, _size in await self.chunks(upload_id):
            if offset != end:
                break
            key = prefix + _chunk_name(offset)
            with quarantine_errors():
                async with self.storage.open_stream(key, self.quarantine.chunk_bytes) as (_, got):
                    async for piece in got:
                        end += len(piece)
                        yield piece

    async def _remove(self, keys: list[str]) -> None:
        with quarantine_errors():
            for key in keys:
                await self.storage.delete(key)

    async def delete(self, upload_id: str) -> None:
        """Delete every object under the upload's prefix, the state last."""
        prefix = self._prefix(upload_id)
        keys = sorted((key for key, _ in await self._keys(prefix)), key=lambda k: k.endswith(STATE))
        await self._remove(keys)

    async def delete_chunks(self, upload_id: str) -> None:
        """Delete the chunk objects, keep the state."""
        prefix = self._prefix(upload_id)
        await self._remove([key for key, _ in await self._keys(prefix) if key.endswith(CHUNK)])

    async def ids(self) -> list[str]:
        """Every id with an object under ``tus/``."""
        found = {key[len(S3_PREFIX) :].split("/", 1)[0] for key, _ in await self._keys(S3_PREFIX)}
        return sorted(i for i in found if _ID.fullmatch(i))

    @contextlib.asynccontextmanager
    async def lock(self, upload_id: str) -> AsyncIterator[None]:
        """In this process only (S3 offers no lock; see docs/uploads.md).

        Raises:
            UploadBusy: another request of this process holds it.
        """
        with self._held.hold(upload_id):
            yield
