"""Reading the bytes an event's ``source`` points at, checked against the event.

Events carry a source reference, a size and a SHA-256, never the bytes (the brief). Three schemes:

- ``spool://<name>`` and ``quarantine://<name>``: a file the gateway spooled, in the local
  directory or in the S3 quarantine bucket (the :class:`~shared.ports.Spool` port,
  :class:`~shared.adapters.spools.Spools` for both);
- ``s3://<bucket>/<key>``: an object an upstream service wrote. Only buckets in
  ``allowed_buckets`` (by default Sluice's own) may be read, so an event cannot make Sluice
  copy an object from a bucket it was never meant to take files from.

:meth:`SpoolOrS3SourceReader.read` returns the whole file in memory: files are at most 10 MB
by policy (seed 000), and ``max_bytes`` refuses anything bigger before it is read. Large files
that are only passed on (a multipart upload) use :meth:`SpoolOrS3SourceReader.iter_chunks`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Collection
from typing import Self

from shared.adapters.storage import parse_s3_uri
from shared.errors import ChecksumMismatch, InvalidSource, SourceMissing
from shared.ports import ObjectStore, Spool
from shared.settings import S3Settings

S3_SCHEME = "s3://"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class SpoolOrS3SourceReader:
    """The :class:`~shared.ports.SourceReader` port over the spool and S3.

    Args:
        spool: where ``spool://`` and ``quarantine://`` references live.
        storage: the object store ``s3://`` references are read through (with the local
            backend, ``s3://<bucket>/<key>`` is ``<bucket>/<key>`` below its root).
        allowed_buckets: buckets ``s3://`` references may name; default ``{storage.bucket}``.
        max_bytes: largest source :meth:`read` loads into memory, bytes.
    """

    def __init__(
        self,
        spool: Spool,
        storage: ObjectStore,
        *,
        allowed_buckets: Collection[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._spool = spool
        self._storage = storage
        self._allowed = frozenset(allowed_buckets or {storage.bucket})
        self.max_bytes = max_bytes

    @classmethod
    def for_settings(cls, spool: Spool, storage: ObjectStore, s3: S3Settings) -> Self:
        """A reader over ``spool`` and ``storage`` that allows the bucket of ``storage`` and the
        upstream buckets of ``S3_UPSTREAM_BUCKETS`` (what every stage reads sources with)."""
        return cls(spool, storage, allowed_buckets={storage.bucket, *s3.upstream_buckets})

    def _s3_location(self, source: str) -> tuple[str, str]:
        bucket, key = parse_s3_uri(source)
        if bucket not in self._allowed:
            raise InvalidSource("s3:// source in a bucket Sluice does not read", source=source)
        return bucket, key

    async def _size(self, source: str) -> int:
        if self._spool.owns(source):
            return await self._spool.size(source)
        if source.startswith(S3_SCHEME):
            bucket, key = self._s3_location(source)
            info = await self._storage.head(key, bucket=bucket)
            if info is None:
                raise SourceMissing("source object is gone", source=source)
            return info.size_bytes
        raise InvalidSource(
            "unknown source scheme (spool://, quarantine:// or s3:// expected)", source=source
        )

    async def read(self, source: str, *, expected_sha256: str, expected_size: int) -> bytes:
        """The whole source, checked against the event's size (bytes) and SHA-256 (hex).

        The size is checked before reading (``stat`` or S3 HEAD), so a wrong or huge source is
        refused without being loaded.

        Raises:
            ChecksumMismatch: the size or SHA-256 differs (context: expected, actual).
            SourceMissing: the spooled file or the object is gone.
            QuarantineUnavailable: S3 down, for a ``quarantine://`` source.
            InvalidSource: unknown scheme, bad spool name, foreign bucket, or the source is
                bigger than ``max_bytes``.
            StorageUnavailable: S3 down.
        """
        if expected_size > self.max_bytes:
            raise InvalidSource(
                f"source bigger than {self.max_bytes} bytes", source=source, size=expected_size
            )
        actual_size = await self._size(source)
        if actual_size != expected_size:
            raise ChecksumMismatch(
                "source size differs from the event's",
                source=source,
                expected=expected_size,
                actual=actual_size,
            )
        if self._spool.owns(source):
            data = await self._spool.read_bytes(source)
        else:
            bucket, key = self._s3_location(source)
            data = await self._storage.get_bytes(key, bucket=bucket)
        actual_sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        if len(data) != expected_size or actual_sha256 != expected_sha256:
            raise ChecksumMismatch(
                "source bytes do not match the event's SHA-256",
                source=source,
                expected=expected_sha256,
                actual=actual_sha256,
                size=len(data),
            )
        return data

    async def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        """The source in chunks, unverified: the consumer hashes what it reads.

        A spooled file is streamed (from disk, or from the quarantine bucket) in the spool's
        ``chunk_bytes``; ``s3://`` is read
        whole (at most ``max_bytes``) and cut into chunks of the same size.

        Raises (on iteration):
            SourceMissing: the source is gone.
            InvalidSource: unknown scheme, bad name, foreign bucket, bigger than ``max_bytes``.
            StorageUnavailable: S3 down.
        """
        if self._spool.owns(source):
            async for chunk in self._spool.iter_chunks(source):
                yield chunk
            return
        size = await self._size(source)
        if size > self.max_bytes:
            raise InvalidSource(
                f"source bigger than {self.max_bytes} bytes", source=source, size=size
            )
        bucket, key = self._s3_location(source)
        data = await self._storage.get_bytes(key, bucket=bucket)
        step = self._spool.chunk_bytes
        for start in range(0, len(data), step):
            yield data[start : start + step]
