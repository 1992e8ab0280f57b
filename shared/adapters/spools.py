"""Both spools at once: writes go to the configured backend, everything else to the one a
reference names.

``SLUICE_SPOOL_BACKEND`` chooses where the gateway spools new uploads: the local directory
(``spool://<name>``, :class:`~shared.adapters.spool.LocalSpool`) or the quarantine bucket
(``quarantine://<name>``, :class:`~shared.adapters.quarantine.QuarantineSpool`). A reference
names its backend, so a process reads, promotes and removes a file whatever its own setting:
files spooled before the backend changed are still taken, and stages need not agree on it.

:func:`open_spools` builds the pair from the settings; the quarantine's S3 client is opened but
contacts nothing until a ``quarantine://`` reference is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from shared.adapters.quarantine import QuarantineSpool
from shared.adapters.resumable import LocalUploadStore, S3UploadStore, UploadStore
from shared.adapters.spool import LocalSpool
from shared.adapters.storage import S3ObjectStorage
from shared.errors import InvalidSource
from shared.ports import Spool, SpoolWriter
from shared.settings import Settings


class Spools:
    """The :class:`~shared.ports.Spool` port over the local directory and the quarantine
    bucket: :meth:`reference`, :meth:`check_room` and :meth:`open_writer` use ``writing``
    (the configured backend); every method taking a ``source`` uses the spool it names.
    """

    def __init__(self, local: LocalSpool, quarantine: QuarantineSpool, *, writing: str) -> None:
        if writing not in ("local", "s3"):
            raise ValueError(f"spool backend must be local or s3, not {writing!r}")
        self.local = local
        self.quarantine = quarantine
        self.writing: Spool = local if writing == "local" else quarantine
        #: Unfinished resumable uploads, in the configured backend's area
        #: (:mod:`shared.adapters.resumable`).
        self.uploads: UploadStore = (
            LocalUploadStore(local.root, local.chunk_bytes)
            if writing == "local"
            else S3UploadStore(quarantine)
        )

    @property
    def chunk_bytes(self) -> int:
        """Chunk size of reads, bytes (``SLUICE_SPOOL_CHUNK_BYTES``)."""
        return self.local.chunk_bytes

    def of(self, source: str) -> Spool:
        """The spool ``source`` belongs to.

        Raises:
            InvalidSource: neither ``spool://`` nor ``quarantine://``.
        """
        if self.local.owns(source):
            return self.local
        if self.quarantine.owns(source):
            return self.quarantine
        raise InvalidSource("not a spool reference (spool:// or quarantine://)", source=source)

    def reference(self, name: str) -> str:
        """The reference ``name`` gets in the configured backend."""
        return self.writing.reference(name)

    def owns(self, source: str) -> bool:
        """Whether ``source`` is a ``spool://`` or ``quarantine://`` reference."""
        return self.local.owns(source) or self.quarantine.owns(source)

    async def check_room(self, expected_bytes: int = 0) -> int | None:
        """The configured backend's :meth:`~shared.ports.Spool.check_room`."""
        return await self.writing.check_room(expected_bytes)

    async def open_writer(self, name: str, expected_bytes: int = 0) -> SpoolWriter:
        """A writer in the configured backend."""
        return await self.writing.open_writer(name, expected_bytes)

    async def size(self, source: str) -> int:
        """The spooled file's size, bytes, from the spool ``source`` names."""
        return await self.of(source).size(source)

    async def read_bytes(self, source: str) -> bytes:
        """The whole spooled file, from the spool ``source`` names."""
        return await self.of(source).read_bytes(source)

    async def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        """The spooled file in chunks, from the spool ``source`` names."""
        async for chunk in self.of(source).iter_chunks(source):
            yield chunk

    async def delete(self, source: str) -> bool:
        """Remove the spooled file and its tombstone; ``False`` if already gone."""
        return await self.of(source).delete(source)

    async def abandon(self, source: str) -> None:
        """Leave the ``.abandoned`` tombstone of ``source`` and remove its bytes."""
        await self.of(source).abandon(source)

    async def is_abandoned(self, source: str) -> bool:
        """Whether ``source``'s tombstone is there."""
        return await self.of(source).is_abandoned(source)

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
        """Server-side copy of a quarantined file, checked (``False`` for ``spool://``)."""
        return await self.of(source).promote(
            source,
            bucket=bucket,
            key=key,
            sha256_hex=sha256_hex,
            size_bytes=size_bytes,
            content_type=content_type,
        )


@contextlib.asynccontextmanager
async def open_spools(settings: Settings, *, min_free_bytes: int = 0) -> AsyncIterator[Spools]:
    """Both spools of ``settings`` (``SLUICE_SPOOL_*``, the quarantine on the S3 of ``S3_*``);
    ``min_free_bytes`` is the local disk's floor (the gateway's, which writes)."""
    local = LocalSpool(settings.spool.dir, settings.spool.chunk_bytes, min_free_bytes)
    s3 = settings.s3.model_copy(update={"bucket_name": settings.spool.s3_bucket})
    async with S3ObjectStorage(s3) as storage:
        quarantine = QuarantineSpool(
            storage,
            part_size_bytes=settings.spool.s3_part_size_bytes,
            single_put_max_bytes=settings.spool.s3_single_put_max_bytes,
            parts_in_flight=settings.spool.s3_parts_in_flight,
            chunk_bytes=settings.spool.chunk_bytes,
        )
        yield Spools(local, quarantine, writing=settings.spool.backend)
