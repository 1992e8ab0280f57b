"""The object-storage port on a local directory (``SLUICE_STORAGE_BACKEND=local``; seeds 001
and 003: a local-filesystem implementation beside S3, for development and small installs).

Layout: ``<root>/<bucket>/<key>`` holds an object's bytes, and beside it
``.sluice-meta.<name>.json`` its SHA-256 (base64, as S3's ``ChecksumSHA256``), content type,
user metadata, and the inode, size and modification time of the bytes it describes.
``<root>`` must exist (an unmounted volume is an outage, not an empty store); the bucket
directory is made on first use.

What it promises, as :class:`~shared.adapters.storage.S3ObjectStorage` does:

- a write is atomic: the bytes go to a temporary file in the object's own directory, are
  hashed on the way, ``fsync``-ed, and renamed over the key only when their SHA-256 is the one
  announced; a mismatch raises :class:`ChecksumMismatch` and removes the temporary file, so
  nothing is left behind. The sidecar is written the same way, first; a sidecar whose inode,
  size or mtime is not the object's (a crash between the two renames) is ignored, so
  :meth:`head` never pairs bytes with another write's checksum;
- a key never leaves the bucket directory (:func:`shared.adapters.local_keys.key_parts`), and
  no symbolic link is followed, in the key's directories or at the object itself;
- the same errors for the same situations: an object that is not there is ``None`` from
  :meth:`head` and :class:`SourceMissing` from a read; a key that is not allowed or that
  collides with a directory is a :class:`PermanentError`; every other ``OSError`` (root
  missing or read-only, disk full, I/O error) is :class:`StorageUnavailable`, so circuit
  breakers and the Base64 fallback work as they do when S3 is down.

Files are read and written in a worker thread (:func:`asyncio.to_thread`), one chunk at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import os
import secrets
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from shared.adapters.durable import fsync_directory
from shared.adapters.local_keys import RESERVED_PREFIX, key_parts
from shared.adapters.signed_urls import UrlSigner
from shared.adapters.storage import ObjectInfo, b64_sha256
from shared.errors import (
    ChecksumMismatch,
    InvalidSource,
    PermanentError,
    SourceMissing,
    StorageUnavailable,
)
from shared.telemetry.metrics import STORED_BYTES

T = TypeVar("T")
_META = RESERVED_PREFIX + "meta."
_TMP = RESERVED_PREFIX + "tmp-"
#: What ``open(2)`` answers when a key's directory is a file or a symbolic link, or the object
#: is a directory: the key is not an object here (S3 would say NoSuchKey).
_NOT_AN_OBJECT = (errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENOENT)


class LocalObjectStorage:
    """The :class:`~shared.ports.ObjectStore` port over ``root/bucket``.

    Args:
        root: the storage root (``SLUICE_STORAGE_LOCAL_DIR``); must exist.
        bucket: the bucket's name (``S3_BUCKET_NAME``), a directory below ``root``.
        signer: signs the download URLs of :meth:`presigned_get_url`.
        presign_ttl_s: their default lifetime, seconds (``S3_PRESIGN_TTL_S``).
        chunk_bytes: read and write chunk size, bytes.
        stored_bytes_stage: counts originals written in ``sluice_stored_bytes_total{stage}``.
    """

    def __init__(
        self,
        root: Path,
        bucket: str,
        *,
        signer: UrlSigner,
        presign_ttl_s: int = 900,
        chunk_bytes: int = 256 * 1024,
        stored_bytes_stage: str | None = None,
    ) -> None:
        self.root = root
        self.bucket = bucket
        self.signer = signer
        self.presign_ttl_s = presign_ttl_s
        self.chunk_bytes = chunk_bytes
        self.stored_bytes_stage = stored_bytes_stage

    async def __aenter__(self) -> LocalObjectStorage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    # -- paths ----------------------------------------------------------------------------

    def _bucket_dir(self, bucket: str | None) -> Path:
        name = bucket or self.bucket
        if "/" in name or name in ("", ".", "..") or name.startswith("."):
            raise InvalidSource("bucket name not allowed", bucket=name)
        return self.root / name

    def _paths(self, key: str, bucket: str | None) -> tuple[Path, Path]:
        """``(object, sidecar)`` paths of ``key``; refuses keys that could leave the bucket."""
        parts = key_parts(key)
        directory = self._bucket_dir(bucket).joinpath(*parts[:-1])
        return directory / parts[-1], directory / f"{_META}{parts[-1]}.json"

    def _check_root(self) -> None:
        try:
            mode = os.stat(self.root).st_mode
        except OSError as exc:
            raise StorageUnavailable(
                f"storage root unreachable: {exc.strerror}", root=str(self.root)
            ) from exc
        if not stat.S_ISDIR(mode):
            raise StorageUnavailable("storage root is not a directory", root=str(self.root))

    def _safe_dirs(self, path: Path, *, create: bool) -> None:
        """Make (with ``create``) and check the directories from the bucket down to ``path``'s
        parent: each a real directory, none a symbolic link. Raises ``OSError`` (ENOTDIR,
        ELOOP) otherwise."""
        self._check_root()
        current = self.root
        for part in path.relative_to(self.root).parts[:-1]:
            current = current / part
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(current, 0o750)
            mode = os.lstat(current).st_mode
            if stat.S_ISLNK(mode):
                raise OSError(errno.ELOOP, "symbolic link in the key's path", str(current))
            if not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, "a key's directory is an object", str(current))

    async def _run(self, operation: str, key: str, work: Callable[[], T]) -> T:
        """Run blocking ``work`` in a thread, translating ``OSError`` (module docstring)."""
        try:
            return await asyncio.to_thread(work)
        except OSError as exc:
            context = {"bucket": self.bucket, "key": key, "operation": operation}
            if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG):
                raise PermanentError(
                    f"key collides with a directory or link: {exc.strerror}", **context
                ) from exc
            raise StorageUnavailable(f"local storage: {exc!r}", **context) from exc

    # -- probes ---------------------------------------------------------------------------

    async def ping(self) -> None:
        """The root is there and writable and the bucket directory exists (made if missing):
        the readiness probe, as S3's HeadBucket.

        Raises:
            StorageUnavailable: the root is missing, not a directory, or not writable.
        """

        def work() -> None:
            self._check_root()
            with contextlib.suppress(FileExistsError):
                os.mkdir(self._bucket_dir(None), 0o750)
            if not os.access(self._bucket_dir(None), os.W_OK | os.X_OK):
                raise OSError(errno.EACCES, "bucket directory not writable")

        await self._run("ping", "", work)

    ensure_bucket = ping

    # -- writes ---------------------------------------------------------------------------

    def _write(
        self,
        key: str,
        chunks: Iterator[bytes],
        sha256_hex: str,
        content_type: str,
        metadata: dict[str, str],
    ) -> int:
        target, sidecar = self._paths(key, None)
        self._safe_dirs(target, create=True)
        temporary = target.parent / f"{_TMP}{secrets.token_hex(8)}"
        meta_temporary = target.parent / f"{_TMP}{secrets.token_hex(8)}"
        digest, size = hashlib.sha256(), 0
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
                handle.flush()
                if digest.hexdigest() != sha256_hex:
                    raise ChecksumMismatch(
                        "bytes written do not match the announced SHA-256",
                        bucket=self.bucket,
                        key=key,
                        expected=sha256_hex,
                        actual=digest.hexdigest(),
                    )
                os.fsync(handle.fileno())
                written = os.fstat(handle.fileno())
            meta = {
                "checksum_sha256": b64_sha256(sha256_hex),
                "content_type": content_type,
                "metadata": metadata,
                "size_bytes": size,
                "inode": written.st_ino,
                "mtime_ns": written.st_mtime_ns,
            }
            fd = os.open(meta_temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
            with os.fdopen(fd, "w") as handle:
                json.dump(meta, handle)
                handle.flush()
                os.fsync(handle.fileno())
            if target.is_symlink() or target.is_dir():
                raise OSError(errno.EISDIR, "the key names a directory or a link", str(target))
            os.replace(meta_temporary, sidecar)
            os.replace(temporary, target)
            fsync_directory(target.parent)
        finally:
            temporary.unlink(missing_ok=True)
            meta_temporary.unlink(missing_ok=True)
        return size

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        sha256_hex: str,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Write ``data`` at ``key`` atomically, checked against ``sha256_hex`` (hex).

        Raises:
            ChecksumMismatch: ``data`` does not hash to ``sha256_hex``; nothing is written.
            InvalidSource: a key that is not allowed. PermanentError: it collides with a
                directory. StorageUnavailable: root missing or read-only, disk full, I/O error.
        """
        step = self.chunk_bytes
        pieces = (data[i : i + step] for i in range(0, len(data), step))
        size = await self._run(
            "put",
            key,
            lambda: self._write(key, pieces, sha256_hex, content_type, dict(metadata or {})),
        )
        self._count_stored(size)

    async def put_new(self, key: str, data: bytes, *, sha256_hex: str, content_type: str) -> bool:
        """:meth:`put_bytes` unless a file is at ``key`` already (then ``False``, nothing
        written). The check and the write are two steps, as a HEAD and a PUT are: two writers
        of one key at once may both write it, each whole (the write is atomic).

        Raises:
            As :meth:`put_bytes`.
        """
        if await self.head(key) is not None:
            return False
        await self.put_bytes(key, data, sha256_hex=sha256_hex, content_type=content_type)
        return True

    async def put_multipart(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        sha256_hex: str,
        content_type: str,
    ) -> None:
        """Write the stream at ``key`` atomically, unless it does not hash to ``sha256_hex``.

        The stream is copied to the temporary file as it arrives, through a bounded queue (at
        most four chunks in memory). Like S3's multipart upload, the whole SHA-256 is also
        kept as user metadata ``sha256`` (hex).

        Raises:
            ChecksumMismatch: the stream's SHA-256 is not ``sha256_hex``; nothing is written.
            StorageUnavailable: as :meth:`put_bytes`; and whatever the stream raises.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)

        def pieces() -> Iterator[bytes]:
            while (
                chunk := asyncio.run_coroutine_threadsafe(queue.get(), loop).result()
            ) is not None:
                yield chunk

        writing = asyncio.ensure_future(
            self._run(
                "put",
                key,
                lambda: self._write(
                    key, pieces(), sha256_hex, content_type, {"sha256": sha256_hex}
                ),
            )
        )

        async def send(item: bytes | None) -> bool:
            """Queue ``item`` for the writer; ``False`` if the writer has stopped (failed)."""
            putting = asyncio.ensure_future(queue.put(item))
            await asyncio.wait({putting, writing}, return_when=asyncio.FIRST_COMPLETED)
            if not putting.done():
                putting.cancel()
                return False
            return True

        try:
            async for chunk in chunks:
                if not await send(chunk):
                    break
        except BaseException:
            # End the writer's stream with bytes that cannot match: it removes its file.
            if await send(b"\0"):
                await send(None)
            with contextlib.suppress(Exception):
                await writing
            raise
        await send(None)
        self._count_stored(await writing)

    def _count_stored(self, size_bytes: int) -> None:
        if self.stored_bytes_stage is not None:
            STORED_BYTES.labels(self.stored_bytes_stage).inc(size_bytes)

    # -- reads ----------------------------------------------------------------------------

    def _info(self, key: str, bucket: str | None) -> tuple[ObjectInfo, int] | None:
        """The object's info and an open descriptor, or ``None`` if there is no object."""
        target, sidecar = self._paths(key, bucket)
        self._check_root()
        try:
            self._safe_dirs(target, create=False)
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in _NOT_AN_OBJECT:
                return None
            raise
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                os.close(fd)
                return None
            meta = _read_sidecar(sidecar, status)
        except BaseException:
            os.close(fd)
            raise
        info = ObjectInfo(
            key=key,
            size_bytes=status.st_size,
            last_modified=datetime.fromtimestamp(status.st_mtime, UTC),
            content_type=meta.get("content_type"),
            checksum_sha256=meta.get("checksum_sha256"),
            metadata=dict(meta.get("metadata") or {}),
        )
        return info, fd

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo | None:
        """Size, type, stored SHA-256 (base64) and metadata of ``key``, or ``None`` if absent.

        Raises:
            InvalidSource: a key that is not allowed. StorageUnavailable: root missing, I/O.
        """

        def work() -> ObjectInfo | None:
            found = self._info(key, bucket)
            if found is None:
                return None
            os.close(found[1])
            return found[0]

        return await self._run("head", key, work)

    async def get_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        """The whole object.

        Raises:
            SourceMissing: no such object. StorageUnavailable: root missing, I/O error.
        """

        def work() -> bytes:
            found = self._info(key, bucket)
            if found is None:
                raise SourceMissing("no such object", bucket=bucket or self.bucket, key=key)
            with os.fdopen(found[1], "rb") as handle:
                return handle.read()

        return await self._run("get", key, work)

    @contextlib.asynccontextmanager
    async def open_stream(
        self, key: str, chunk_bytes: int = 256 * 1024, byte_range: tuple[int, int] | None = None
    ) -> AsyncIterator[tuple[ObjectInfo, AsyncIterator[bytes]]]:
        """Open the object for streaming: yields its info and an iterator of chunks (of bytes
        ``first`` to ``last`` only, when ``byte_range`` is given). The file is opened before
        this yields, so a rename over it meanwhile does not change what is read.

        Raises:
            SourceMissing: no such object. StorageUnavailable: root missing, I/O error.
        """
        found = await self._run("get", key, lambda: self._info(key, None))
        if found is None:
            raise SourceMissing("no such object", bucket=self.bucket, key=key)
        info, fd = found
        handle = os.fdopen(fd, "rb")
        first, last = (0, info.size_bytes - 1) if byte_range is None else byte_range
        if first:
            handle.seek(first)

        async def chunks() -> AsyncIterator[bytes]:
            left = last - first + 1
            while left > 0:
                chunk = await self._run(
                    "get", key, functools.partial(handle.read, min(chunk_bytes, left))
                )
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

        try:
            yield info, chunks()
        finally:
            handle.close()

    async def copy(
        self, source_key: str, key: str, *, sha256_hex: str, size_bytes: int, content_type: str
    ) -> None:
        """Copy ``source_key`` to ``key`` below the root, hashed as it is written and renamed
        into place only if it is ``size_bytes`` bytes of SHA-256 ``sha256_hex`` (the same
        atomic, checked write as :meth:`put_bytes`; the bytes never leave this process).

        Raises:
            SourceMissing: no object at ``source_key``.
            ChecksumMismatch: the source's bytes are not ``sha256_hex``; nothing is written.
            InvalidSource: a key that is not allowed. StorageUnavailable: root missing, I/O.
        """

        def work() -> int:
            found = self._info(source_key, None)
            if found is None:
                raise SourceMissing("no such object", bucket=self.bucket, key=source_key)
            info, fd = found
            if info.size_bytes != size_bytes:
                os.close(fd)
                raise ChecksumMismatch(
                    "the original's size is not the expected one",
                    bucket=self.bucket,
                    key=source_key,
                    expected=size_bytes,
                    actual=info.size_bytes,
                )
            with os.fdopen(fd, "rb") as handle:
                pieces = iter(lambda: handle.read(self.chunk_bytes), b"")
                return self._write(key, pieces, sha256_hex, content_type, {"sha256": sha256_hex})

        size = await self._run("copy", key, work)
        self._count_stored(size)

    async def delete(self, key: str) -> None:
        """Delete the object and its sidecar (no error if it is already gone), then the
        directories it leaves empty, up to the bucket directory.

        Raises:
            InvalidSource: a key that is not allowed. StorageUnavailable: root missing, I/O.
        """

        def work() -> None:
            target, sidecar = self._paths(key, None)
            self._check_root()
            try:
                self._safe_dirs(target, create=False)
            except OSError as exc:
                if exc.errno in _NOT_AN_OBJECT:
                    return
                raise
            if target.is_symlink() or not target.is_dir():
                target.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            bucket_dir = self._bucket_dir(None)
            directory = target.parent
            while directory != bucket_dir:
                try:
                    directory.rmdir()
                except OSError:
                    break
                directory = directory.parent

        await self._run("delete", key, work)

    async def presigned_get_url(
        self,
        key: str,
        ttl_s: int | None = None,
        *,
        download_name: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A gateway URL (path and query) serving ``key`` for ``ttl_s`` seconds (default
        ``S3_PRESIGN_TTL_S``), signed (``shared.adapters.signed_urls``); with ``download_name``
        (already percent-encoded) it is an ``attachment`` of that name, with ``content_type``
        as its ``Content-Type``, as S3's ``response-content-*`` overrides."""
        key_parts(key)
        return self.signer.url(
            key,
            ttl_s or self.presign_ttl_s,
            download_name=download_name,
            content_type=content_type,
        )

    async def list_objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in ``/``-segment order (as SeaweedFS
        lists: ``sluice reconcile --listing-order segments``), one directory in memory at a
        time. Temporary files and sidecars are not objects; symbolic links are skipped.

        Raises:
            StorageUnavailable: root missing, I/O error.
        """
        await self._run("list", prefix, self._check_root)
        bucket_dir = self._bucket_dir(None)
        stack: list[tuple[str, Path]] = [("", bucket_dir)]
        while stack:
            key_prefix, directory = stack.pop()
            entries = await self._run("list", key_prefix, functools.partial(_scan, directory))
            pending: list[tuple[str, Path]] = []
            for name, is_dir, size, mtime in entries:
                key = f"{key_prefix}{name}"
                if is_dir:
                    if f"{key}/".startswith(prefix) or prefix.startswith(f"{key}/"):
                        pending.append((f"{key}/", directory / name))
                    continue
                if key.startswith(prefix):
                    yield ObjectInfo(
                        key=key,
                        size_bytes=size,
                        last_modified=datetime.fromtimestamp(mtime, UTC),
                    )
            stack.extend(reversed(pending))


def _scan(directory: Path) -> list[tuple[str, bool, int, float]]:
    """``(name, is_dir, size, mtime)`` of ``directory``'s objects and subdirectories, by name;
    none of the backend's own files, no symbolic link. A missing directory is empty."""
    try:
        with os.scandir(directory) as entries:
            found = [
                (e.name, e.is_dir(follow_symlinks=False), e.stat(follow_symlinks=False))
                for e in entries
                if not e.name.startswith(RESERVED_PREFIX) and not e.is_symlink()
            ]
    except FileNotFoundError:
        return []
    return sorted((name, d, s.st_size, s.st_mtime) for name, d, s in found)


def _read_sidecar(path: Path, status: os.stat_result) -> dict[str, Any]:
    """The sidecar's fields, or ``{}`` when it is missing, unreadable as JSON, or describes
    other bytes than the object whose ``stat`` is ``status`` (inode, size, mtime)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            meta = json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return {}
    except OSError as exc:
        if exc.errno in _NOT_AN_OBJECT:
            return {}
        raise
    if not isinstance(meta, dict):
        return {}
    written = (meta.get("inode"), meta.get("size_bytes"), meta.get("mtime_ns"))
    if written != (status.st_ino, status.st_size, status.st_mtime_ns):
        return {}
    return meta
