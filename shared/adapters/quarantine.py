"""The S3 spool: uploads wait, unscanned, in a quarantine bucket (``SLUICE_SPOOL_BACKEND=s3``).

The pattern antivirus pipelines use: the gateway writes every upload into the quarantine bucket
(``SLUICE_SPOOL_S3_BUCKET``, default ``sluice-quarantine``, on the S3 of ``S3_*``); the scan
stage reads it there; the store stage *promotes* a clean file to the final bucket by a
server-side copy, checked against the event's SHA-256; the commit stage removes the quarantine
copy once the file's final state is recorded. Workers on other hosts read it as any S3 client
does, which a local directory cannot offer.

A reference is ``quarantine://<name>`` (the object key is ``<name>``, a spool name of
:func:`shared.adapters.spool.valid_name`), so any process reads it whatever its own backend.

Writes (:class:`QuarantineWriter`) hash the whole as it streams. A file bigger than
``SLUICE_SPOOL_S3_SINGLE_PUT_MAX_BYTES`` (8 MiB) is a multipart upload with a SHA-256 per part
(``ChecksumAlgorithm=SHA256``; parts of ``SLUICE_SPOOL_S3_PART_SIZE_BYTES``, 5 MiB, after the
first): the object appears only at ``CompleteMultipartUpload``, and any error, or leaving the
writer without :meth:`QuarantineWriter.commit`, aborts the upload. A file up to that limit
(every PDF, most images) is held in memory and sent at commit in one ``PutObject`` with its
whole SHA-256 (``ChecksumSHA256``, verified by S3): one request instead of three, and a
full-object checksum, which lets the store stage promote it without reading it back. The two
limits are apart so that a big upload holds small parts (memory) while photos up to 8 MiB stay
single objects. Either way no half-written object is ever visible. An
abort S3 did not answer (it was down) leaves an incomplete upload, invisible to readers, which
``sluice spool clean`` aborts (:meth:`QuarantineSpool.entries`).

The tombstone of an upload the gateway answered 503 is an empty object ``<name>.abandoned``,
as in the directory. S3 has no disk to fill: :meth:`QuarantineSpool.check_room` has no floor to
check, and ``SLUICE_SPOOL_MIN_FREE_BYTES`` does not apply; an S3 that cannot take the bytes
answers an error, which the gateway answers 503 with ``Retry-After``.

Promotion (:meth:`QuarantineSpool.promote`), as SeaweedFS 4.48 was seen to behave
(docs/architecture.md § The spool):

1. HEAD of the quarantine object with ``ChecksumMode=ENABLED``: its size must be the event's;
2. ``CopyObject`` to the final key with ``CopySourceIfMatch`` the ETag just read (the copy is of
   that object and no other), ``MetadataDirective=REPLACE``, the sniffed ``ContentType`` and
   user metadata ``sha256`` (the whole SHA-256, hex, as ``S3ObjectStorage.put_multipart``
   writes it);
3. the copy is checked: a quarantine object written in one ``PutObject`` carries the full
   SHA-256 as its ``ChecksumSHA256`` (and one written as a one-part multipart upload S3's
   composite ``base64(SHA-256(part SHA-256))-1``): both follow from the event's SHA-256 alone,
   and ``CopyObject`` keeps them, so the copy's checksum (HEAD) proves its bytes without reading
   them; an object of several parts is read back and hashed. A copy that fails the check is
   deleted and :class:`~shared.errors.ChecksumMismatch` raised.

Every S3 failure of the quarantine raises :class:`~shared.errors.QuarantineUnavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

import structlog

from shared.adapters.encryption import sse_arguments
from shared.adapters.spool import ABANDONED, PARTIAL, valid_name
from shared.adapters.storage import S3ObjectStorage, b64_sha256
from shared.errors import (
    ChecksumMismatch,
    InvalidSource,
    QuarantineUnavailable,
    SourceMissing,
    StorageUnavailable,
)

T = TypeVar("T")
SCHEME = "quarantine://"
#: Bodies of at least this many bytes are hashed in a worker thread (:class:`QuarantineWriter`):
#: below it the hop costs more than the hash blocks the event loop (1 MiB: about 2 ms).
THREAD_HASH_BYTES = 1024 * 1024
#: Key prefix of unfinished resumable uploads (:mod:`shared.adapters.resumable`), which
#: :meth:`QuarantineSpool.entries` leaves to their own cleaner.
RESUMABLE_PREFIX = "tus/"
log = structlog.get_logger("sluice.quarantine")


def one_part_checksum(sha256_hex: str) -> str:
    """S3's composite ``ChecksumSHA256`` of a multipart upload of one part whose bytes hash to
    ``sha256_hex``: ``base64(SHA-256(digest))-1`` (AWS S3 docs, "Checking object integrity",
    checksums of multipart uploads)."""
    digest = hashlib.sha256(bytes.fromhex(sha256_hex)).digest()
    return base64.b64encode(digest).decode() + "-1"


def checksum_proves(checksum: str | None, sha256_hex: str) -> bool:
    """Whether S3's ``ChecksumSHA256`` of an object proves its bytes hash to ``sha256_hex``: a
    full-object checksum equal to it, or the composite checksum of one part
    (:func:`one_part_checksum`). A composite of several parts proves nothing without the parts."""
    if not checksum:
        return False
    return checksum in (b64_sha256(sha256_hex), one_part_checksum(sha256_hex))


@contextlib.contextmanager
def _quarantine_errors() -> Iterator[None]:
    """S3 unavailability of the quarantine as :class:`QuarantineUnavailable`."""
    try:
        yield
    except QuarantineUnavailable:
        raise
    except StorageUnavailable as exc:
        raise QuarantineUnavailable(exc.message, **exc.context) from exc


#: :func:`_quarantine_errors` for the other adapters of the quarantine bucket
#: (:mod:`shared.adapters.resumable`).
quarantine_errors = _quarantine_errors


async def _sized(body: bytes, work: Callable[[], T]) -> T:
    """``work()``, which hashes ``body``: inline, or in a worker thread for a body of
    :data:`THREAD_HASH_BYTES` or more."""
    if len(body) < THREAD_HASH_BYTES:
        return work()
    return await asyncio.to_thread(work)


@dataclass(frozen=True)
class QuarantineEntry:
    """One thing in the quarantine bucket: an object (``name``, a ``.abandoned`` tombstone
    among them) or an incomplete multipart upload (``name`` + ``.partial``, ``upload_id``)."""

    name: str
    age_s: float
    size_bytes: int
    upload_id: str | None = None


class QuarantineWriter:
    """One upload into the quarantine bucket, hashed as it streams (the
    :class:`~shared.ports.SpoolWriter` port). Use as an async context manager: leaving it
    without :meth:`commit` aborts the upload.

    Chunks are held until they pass ``single_put_max`` bytes (``part_size`` when not given): a
    file that never does before its last chunk goes up at :meth:`commit` in one ``PutObject``
    with its whole SHA-256 as ``ChecksumSHA256`` (one request, which S3 verifies and applies
    whole or not at all, and which the store stage promotes without reading it back); a bigger
    one becomes a multipart upload, started with those bytes as its first part, each part with
    its SHA-256, aborted on any error. A later part is the chunks held, joined once, when more
    bytes follow them: at least ``part_size`` (a chunk that would make it pass twice that is
    cut), and never an empty last part. Up to ``parts_in_flight`` parts are sent at once while
    the next one fills, so the client's body keeps flowing during an ``UploadPart`` (one at a
    time, a 100 MiB upload went at 0.39 x a raw ``PutObject``, two at once at 0.51;
    ``docs/performance.md``). A part's two hashes (its own, and the whole file's, fed in order)
    run in a worker thread, where hashlib releases the GIL, so the event loop goes on reading
    the body meanwhile. Holds at most ``parts_in_flight + 2`` parts in memory, the first of
    them up to ``single_put_max``.
    """

    def __init__(
        self,
        spool: QuarantineSpool,
        key: str,
        part_size: int,
        parts_in_flight: int = 1,
        single_put_max: int | None = None,
    ) -> None:
        self._spool = spool
        self._key = key
        self._upload_id: str | None = None
        self._part_size = part_size
        self._single_put_max = part_size if single_put_max is None else single_put_max
        self._parts_in_flight = max(1, parts_in_flight)
        self._sha256 = hashlib.sha256()
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._parts: list[dict[str, Any]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._part_count = 0
        self._done = False
        self.size_bytes = 0

    @property
    def sha256(self) -> str:
        """SHA-256 of the file, lowercase hex, once :meth:`commit` has returned (before, of
        the parts sent so far)."""
        return self._sha256.hexdigest()

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``; when at least a part is held before it, those bytes are sent as
        the next part with their SHA-256 (``UploadPart``, after ``CreateMultipartUpload`` for
        the first). ``chunk`` is kept, not copied, until its part is joined: an immutable
        ``bytes``, never a buffer the caller reuses.

        Raises:
            QuarantineUnavailable: S3 did not take the part; the upload is aborted.
        """
        if not chunk:
            return
        self.size_bytes += len(chunk)
        try:
            if self._held_bytes >= self._next_part_size():
                await self._launch(self._take())
            if self._held_bytes + len(chunk) > 2 * self._next_part_size():  # a chunk larger
                view = memoryview(chunk)  # than a part: cut whole parts out of it
                while self._held_bytes + len(view) > (size := self._next_part_size()):
                    room = size - self._held_bytes
                    self._hold(bytes(view[:room]))
                    view = view[room:]
                    await self._launch(self._take())
                chunk = bytes(view)
        except BaseException:
            await self.abort()
            raise
        self._hold(chunk)

    def _next_part_size(self) -> int:
        """Bytes held before they go up as a part: the single-``PutObject`` limit for the
        first (under it, the file is one ``PutObject``), ``part_size`` for the others."""
        return self._part_size if self._part_count else self._single_put_max

    def _hold(self, chunk: bytes) -> None:
        self._held.append(chunk)
        self._held_bytes += len(chunk)

    def _take(self) -> bytes:
        """The held chunks as one ``bytes`` (one copy), no longer held."""
        held, self._held, self._held_bytes = self._held, [], 0
        return held[0] if len(held) == 1 else b"".join(held)

    async def _hash(self, body: bytes) -> str:
        """Feed ``body`` (a part) to the file's SHA-256 and return its own, Base64. Called in
        the order of the bytes."""

        def digest() -> str:
            self._sha256.update(body)
            return base64.b64encode(hashlib.sha256(body).digest()).decode()

        return await _sized(body, digest)

    async def _launch(self, body: bytes) -> None:
        """Hash ``body`` and send it as the next part in the background, once fewer than
        ``parts_in_flight`` are being sent (a failed one raises here)."""
        self._part_count += 1
        number = self._part_count
        checksum = await self._hash(body)
        if self._upload_id is None:
            await self._start()
        while len(self._sending) >= self._parts_in_flight:
            await self._wait_sent(asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(
            self._send(body, number, checksum), name=f"quarantine-part-{number}"
        )
        self._sending.add(task)

    async def _wait_sent(self, return_when: str = asyncio.ALL_COMPLETED) -> None:
        """Wait for one (``FIRST_COMPLETED``) or every part being sent; raises the first
        failure."""
        if not self._sending:
            return
        done, _ = await asyncio.wait(self._sending, return_when=return_when)
        self._sending -= done
        for task in done:
            task.result()

    async def _start(self) -> str:
        storage = self._spool.storage
        created = await self._spool.call(
            "CreateMultipartUpload",
            lambda: storage.client.create_multipart_upload(
                Bucket=storage.bucket,
                Key=self._key,
                ContentType="application/octet-stream",
                ChecksumAlgorithm="SHA256",
                **sse_arguments(storage.settings),
            ),
            key=self._key,
        )
        upload_id: str = created["UploadId"]
        self._upload_id = upload_id
        return upload_id

    async def _send(self, body: bytes, number: int, checksum: str) -> None:
        upload_id = self._upload_id or await self._start()
        storage = self._spool.storage
        answer = await self._spool.call(
            "UploadPart",
            lambda: storage.client.upload_part(
                Bucket=storage.bucket,
                Key=self._key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumSHA256=checksum,
            ),
            key=self._key,
            part=number,
        )
        self._parts.append(
            {"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": checksum}
        )

    async def commit(self) -> None:
        """Make the object appear, whole: one verified ``PutObject`` for a file of at most one
        part, else the last part and ``CompleteMultipartUpload``.

        Raises:
            QuarantineUnavailable: S3 did not take it; nothing appears (the upload is aborted).
            ChecksumMismatch: S3 received other bytes than were hashed (BadDigest).
        """
        storage = self._spool.storage
        try:
            if self._upload_id is None:
                body = self._take()  # the whole file: its SHA-256 is the one PutObject sends
                await _sized(body, lambda: self._sha256.update(body))
                with _quarantine_errors():
                    await storage.put_bytes(
                        self._key,
                        body,
                        sha256_hex=self.sha256,
                        content_type="application/octet-stream",
                    )
            else:
                upload_id = self._upload_id
                await self._launch(self._take())
                await self._wait_sent()
                parts = sorted(self._parts, key=lambda part: int(part["PartNumber"]))
                await self._spool.call(
                    "CompleteMultipartUpload",
                    lambda: storage.client.complete_multipart_upload(
                        Bucket=storage.bucket,
                        Key=self._key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    ),
                    key=self._key,
                )
        except BaseException:
            await self.abort()
            raise
        self._done = True

    async def abort(self) -> None:
        """Drop what is held and abort the multipart upload if one was started (idempotent).
        An abort S3 does not answer is logged: the incomplete upload stays invisible until
        ``sluice spool clean`` aborts it."""
        if self._done:
            return
        self._done = True
        self._held, self._held_bytes = [], 0
        for task in self._sending:
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        self._sending.clear()
        if self._upload_id is None:
            return
        storage = self._spool.storage
        upload_id = self._upload_id
        try:
            await self._spool.call(
                "AbortMultipartUpload",
                lambda: storage.client.abort_multipart_upload(
                    Bucket=storage.bucket, Key=self._key, UploadId=upload_id
                ),
                key=self._key,
            )
        except Exception as exc:
            log.warning("quarantine upload not aborted", key=self._key, error=repr(exc))

    async def __aenter__(self) -> QuarantineWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            await self.abort()


class QuarantineSpool:
    """The quarantine bucket, the :class:`~shared.ports.Spool` port over S3.

    ``storage`` is an open :class:`S3ObjectStorage` whose bucket is the quarantine bucket
    (``SLUICE_SPOOL_S3_BUCKET``); ``part_size_bytes`` the multipart part size of writes,
    ``single_put_max_bytes`` the largest write sent in one ``PutObject`` (``part_size_bytes``
    when not given), ``parts_in_flight`` how many parts one write sends at once;
    ``chunk_bytes`` the size of the chunks :meth:`iter_chunks` yields.
    """

    def __init__(
        self,
        storage: S3ObjectStorage,
        *,
        part_size_bytes: int,
        single_put_max_bytes: int | None = None,
        parts_in_flight: int = 1,
        chunk_bytes: int = 256 * 1024,
    ) -> None:
        self.storage = storage
        self.part_size_bytes = part_size_bytes
        self.single_put_max_bytes = (
            part_size_bytes if single_put_max_bytes is None else single_put_max_bytes
        )
        self.parts_in_flight = parts_in_flight
        self.chunk_bytes = chunk_bytes

    @property
    def bucket(self) -> str:
        """The quarantine bucket."""
        return self.storage.bucket

    async def call(self, name: str, operation: Any, **context: Any) -> Any:
        """An S3 operation on the quarantine (:meth:`S3ObjectStorage.call`), its unavailability
        raised as :class:`QuarantineUnavailable`."""
        with _quarantine_errors():
            return await self.storage.call(name, operation, **context)

    @staticmethod
    def reference(name: str) -> str:
        """The reference of quarantined file ``name`` (``quarantine://<name>``)."""
        return SCHEME + name

    @staticmethod
    def owns(source: str) -> bool:
        """Whether ``source`` is a ``quarantine://`` reference."""
        return source.startswith(SCHEME)

    @staticmethod
    def key(source: str) -> str:
        """The object key of a ``quarantine://`` reference.

        Raises:
            InvalidSource: not a quarantine reference, or a name that is not allowed.
        """
        if not source.startswith(SCHEME):
            raise InvalidSource("not a quarantine reference", source=source)
        name = source.removeprefix(SCHEME)
        if not valid_name(name):
            raise InvalidSource("quarantine name not allowed", source=source)
        return name

    async def ensure_bucket(self) -> None:
        """Create the quarantine bucket if it does not exist."""
        with _quarantine_errors():
            await self.storage.ensure_bucket()

    async def ping(self) -> None:
        """HeadBucket of the quarantine bucket (circuit-breaker probes).

        Raises:
            QuarantineUnavailable: S3 down. SourceMissing: no such bucket.
        """
        with _quarantine_errors():
            await self.storage.ping()

    async def check_room(self, expected_bytes: int = 0) -> int | None:
        """``None``: a bucket has no disk to fill, so there is no floor to check."""
        return None

    async def open_writer(self, name: str, expected_bytes: int = 0) -> QuarantineWriter:
        """A writer for ``name`` (:class:`QuarantineWriter`); S3 is first contacted when a part
        is full or at :meth:`QuarantineWriter.commit`.

        Raises:
            InvalidSource: bad name.
        """
        key = self.key(self.reference(name))
        return QuarantineWriter(
            self, key, self.part_size_bytes, self.parts_in_flight, self.single_put_max_bytes
        )

    async def size(self, source: str) -> int:
        """The quarantined file's size, bytes (HEAD).

        Raises:
            SourceMissing: it is not there. QuarantineUnavailable: S3 down.
        """
        key = self.key(source)
        with _quarantine_errors():
            info = await self.storage.head(key)
        if info is None:
            raise SourceMissing("quarantined file is gone", source=source)
        return info.size_bytes

    async def read_bytes(self, source: str) -> bytes:
        """The whole quarantined file (GET).

        Raises:
            SourceMissing: it is not there. QuarantineUnavailable: S3 down.
        """
        key = self.key(source)
        with _quarantine_errors():
            try:
                return await self.storage.get_bytes(key)
            except SourceMissing:
                raise SourceMissing("quarantined file is gone", source=source) from None

    async def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        """The quarantined file streamed in ``chunk_bytes`` chunks.

        Raises (on iteration):
            SourceMissing: it is not there. QuarantineUnavailable: S3 down.
        """
        key = self.key(source)
        with _quarantine_errors():
            try:
                async with self.storage.open_stream(key, self.chunk_bytes) as (_info, chunks):
                    async for chunk in chunks:
                        yield chunk
            except SourceMissing:
                raise SourceMissing("quarantined file is gone", source=source) from None

    async def delete(self, source: str) -> bool:
        """Remove the quarantined file and any tombstone; ``False`` if it was already gone.

        Raises:
            QuarantineUnavailable: S3 down.
        """
        key = self.key(source)
        with _quarantine_errors():
            existed = await self.storage.head(key) is not None
            await self.storage.delete(key + ABANDONED)
            await self.storage.delete(key)
        return existed

    async def abandon(self, source: str) -> None:
        """Leave the empty ``<name>.abandoned`` tombstone, then remove the bytes.

        Raises:
            QuarantineUnavailable: S3 down.
        """
        key = self.key(source)
        with _quarantine_errors():
            await self.storage.put_bytes(
                key + ABANDONED,
                b"",
                sha256_hex=hashlib.sha256(b"").hexdigest(),
                content_type="application/octet-stream",
            )
            await self.storage.delete(key)

    async def is_abandoned(self, source: str) -> bool:
        """Whether the tombstone ``<name>.abandoned`` is there.

        Raises:
            QuarantineUnavailable: S3 down.
        """
        key = self.key(source)
        with _quarantine_errors():
            return await self.storage.head(key + ABANDONED) is not None

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
        """Copy the quarantined file server-side to ``bucket``/``key`` and check the copy (module
        docstring); ``True`` once it is there and proven.

        Raises:
            SourceMissing: the quarantined file is gone.
            ChecksumMismatch: its size, or the copy's SHA-256, is not the event's (the copy is
                deleted again).
            QuarantineUnavailable: S3 down.
        """
        name = self.key(source)
        client = self.storage.client
        context = {"source": source, "bucket": bucket, "key": key}
        try:
            head = await self.call(
                "HeadObject",
                lambda: client.head_object(Bucket=self.bucket, Key=name, ChecksumMode="ENABLED"),
                bucket=self.bucket,
                key=name,
            )
        except SourceMissing:
            raise SourceMissing("quarantined file is gone", **context) from None
        if int(head["ContentLength"]) != size_bytes:
            raise ChecksumMismatch(
                "quarantined file's size differs from the event's",
                expected=size_bytes,
                actual=int(head["ContentLength"]),
                **context,
            )
        try:
            await self.call(
                "CopyObject",
                lambda: client.copy_object(
                    Bucket=bucket,
                    Key=key,
                    CopySource={"Bucket": self.bucket, "Key": name},
                    CopySourceIfMatch=head["ETag"],
                    MetadataDirective="REPLACE",
                    ContentType=content_type,
                    Metadata={"sha256": sha256_hex},
                    **sse_arguments(self.storage.settings),
                ),
                **context,
            )
        except SourceMissing:
            raise SourceMissing("quarantined file is gone", **context) from None
        if checksum_proves(head.get("ChecksumSHA256"), sha256_hex):
            copied = await self.call(
                "HeadObject",
                lambda: client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"),
                **context,
            )
            proven = int(copied["ContentLength"]) == size_bytes and checksum_proves(
                copied.get("ChecksumSHA256"), sha256_hex
            )
            actual = str(copied.get("ChecksumSHA256"))
        else:
            actual = await self._read_back_sha256(bucket, key, context)
            proven = actual == sha256_hex
        if not proven:
            await self.call(
                "DeleteObject", lambda: client.delete_object(Bucket=bucket, Key=key), **context
            )
            raise ChecksumMismatch(
                "the promoted copy is not the event's bytes; removed",
                expected=sha256_hex,
                actual=actual,
                **context,
            )
        return True

    async def _read_back_sha256(self, bucket: str, key: str, context: dict[str, str]) -> str:
        """SHA-256 (hex) of ``bucket``/``key``, streamed."""
        client = self.storage.client

        async def fetch() -> str:
            answer = await client.get_object(Bucket=bucket, Key=key)
            digest = hashlib.sha256()
            async with answer["Body"] as body:
                while chunk := await body.read(self.chunk_bytes):
                    digest.update(chunk)
            return digest.hexdigest()

        result: str = await self.call("GetObject", fetch, **context)
        return result

    async def entries(self) -> list[QuarantineEntry]:
        """Every object of the quarantine bucket and every incomplete multipart upload (as
        ``<name>.partial``), with their age in seconds (``sluice spool clean``).

        Raises:
            QuarantineUnavailable: S3 down.
        """
        now = datetime.now(UTC)
        found: list[QuarantineEntry] = []
        with _quarantine_errors():
            async for item in self.storage.list_objects():
                if item.key.startswith(
                    RESUMABLE_PREFIX
                ):  # unfinished tus uploads: their own cleaner
                    continue
                age = (now - item.last_modified).total_seconds() if item.last_modified else 0.0
                found.append(QuarantineEntry(item.key, age, item.size_bytes))
        client = self.storage.client

        async def uploads() -> list[dict[str, Any]]:
            listed: list[dict[str, Any]] = []
            paginator = client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket):
                listed.extend(page.get("Uploads", []))
            return listed

        for upload in await self.call("ListMultipartUploads", uploads):
            if upload["Key"].startswith(RESUMABLE_PREFIX):
                continue
            started = upload.get("Initiated")
            age = (now - started).total_seconds() if started else 0.0
            found.append(QuarantineEntry(upload["Key"] + PARTIAL, age, 0, upload["UploadId"]))
        return sorted(found, key=lambda entry: entry.name)

    async def remove_entry(self, entry: QuarantineEntry) -> None:
        """Delete an object, or abort an incomplete multipart upload.

        Raises:
            QuarantineUnavailable: S3 down.
        """
        client = self.storage.client
        if entry.upload_id is None:
            with _quarantine_errors():
                await self.storage.delete(entry.name)
            return
        key = entry.name.removesuffix(PARTIAL)
        upload_id = entry.upload_id
        with contextlib.suppress(SourceMissing):  # aborted meanwhile
            await self.call(
                "AbortMultipartUpload",
                lambda: client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
                key=key,
            )
