"""Streaming multipart/form-data into the spool, with the upload policy checked on the way.

The body is read chunk by chunk (``Request.stream()``) and fed to python-multipart's streaming
``MultipartParser``; the ``file`` part goes straight to the spool's writer (a
:class:`~shared.ports.SpoolWriter`: a file in the directory, or a multipart upload into the S3
quarantine bucket, hashing it with SHA-256 as it writes), so memory stays flat whatever the
file size (at most one multipart part for the quarantine).

The first :data:`~shared.policy.HEAD_BYTES` of the file are held back until libmagic
has sniffed them and the policy has accepted the type, so a refused type never touches the
spool. The size limit is the one of the type the file name claims (the largest limit when the
extension is unknown), checked at every chunk: the request is answered 413 as soon as it is
passed, and the partial spool file is removed.

Disk space is checked twice: before the body is read (the request's ``Content-Length`` against
the spool's free space and ``SLUICE_SPOOL_MIN_FREE_BYTES``), and again when the spool file is
opened; a full disk while writing removes the partial file. Each answers 507
``insufficient_storage``. The quarantine bucket has no disk to check; S3 down while writing
aborts the multipart upload and answers 503 ``storage_unavailable``.
"""

from __future__ import annotations

import email.message
import email.utils
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from pydantic import JsonValue
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.gateway.errors import ApiError, insufficient_storage, refused
from services.gateway.fields import MAX_KIND_CHARS, long_kind, parse_kind, parse_metadata
from shared.errors import PolicyRefusal, SpoolFull
from shared.policy import HEAD_BYTES, UploadPolicy, clean_name, sniff
from shared.ports import Spool, SpoolWriter

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

#: Room for boundaries, part headers and the small fields on top of the file and metadata.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 8192

_BEGIN, _FIELD, _VALUE, _HEADER_END, _HEADERS_DONE, _DATA, _PART_END, _END = range(8)

log = structlog.get_logger("sluice.gateway")


@dataclass(frozen=True)
class Upload:
    """A file spooled as ``<name>`` (``spool://<name>`` or ``quarantine://<name>``) and the
    form fields that came with it."""

    name: str
    original_name: str
    content_type: str
    size_bytes: int
    sha256: str
    kind: str | None
    metadata: dict[str, JsonValue]


def _mib(size: int) -> str:
    return f"{size} bytes ({size / (1024 * 1024):.1f} MiB)"


def too_large(what: str, limit: int) -> ApiError:
    """The 413 for ``what`` passing ``limit`` bytes."""
    return ApiError(413, "too_large", f"{what} is larger than the limit of {_mib(limit)}")


def extended_filename(disposition: bytes | None) -> str | None:
    """The ``filename*`` of a part's ``Content-Disposition``, decoded, or ``None``.

    RFC 7578 asks senders for a plain ``filename`` (browsers send it as raw UTF-8), but clients
    send the extended notation of RFC 5987 / RFC 2231, ``filename*=utf-8''%E7%85%A7.jpg``:
    alone (urllib3 before 2.0 for a name that is not ASCII), or beside a ``filename`` holding
    a fallback (.NET's ``MultipartFormDataContent``: an RFC 2047 encoded word). RFC 6266 § 4.3:
    when both are there, ``filename*`` is the one to take. python-multipart's
    ``parse_options_header`` drops it; the standard library's ``email`` parses it (its charset
    applied, bytes it cannot decode replaced).
    """
    if not disposition:
        return None
    message = email.message.Message()
    message["content-disposition"] = disposition.decode("latin-1")
    for key, value in message.get_params(header="content-disposition", failobj=[]):
        if key.lower() == "filename" and isinstance(value, tuple):
            return email.utils.collapse_rfc2231_value(value, errors="replace")
    return None


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a request ``Content-Type``.

    Raises:
        ApiError: 415 ``not_multipart`` if it is not multipart/form-data; 400
            ``malformed_multipart`` if the boundary is missing.
    """
    media, params = parse_options_header(content_type)
    if media.lower() != b"multipart/form-data":
        raise ApiError(
            415, "not_multipart", "send the file as multipart/form-data in a part named `file`"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed_multipart", "multipart Content-Type without a boundary")
    return boundary


class FormReader:
    """Feeds body chunks to the parser and acts on its callbacks (use :func:`read_upload`)."""

    def __init__(
        self,
        spool: Spool,
        policy: UploadPolicy,
        name: str,
        boundary: bytes,
        max_meta: int,
        expected_bytes: int = 0,
    ) -> None:
        self._spool, self._policy, self._name, self._max_meta = spool, policy, name, max_meta
        self._expected = expected_bytes
        self._events: list[tuple[int, bytes]] = []
        add = self._events.append
        callbacks: MultipartCallbacks = {
            "on_part_begin": lambda: add((_BEGIN, b"")),
            "on_header_field": lambda d, s, e: add((_FIELD, d[s:e])),
            "on_header_value": lambda d, s, e: add((_VALUE, d[s:e])),
            "on_header_end": lambda: add((_HEADER_END, b"")),
            "on_headers_finished": lambda: add((_HEADERS_DONE, b"")),
            "on_part_data": lambda d, s, e: add((_DATA, d[s:e])),
            "on_part_end": lambda: add((_PART_END, b"")),
            "on_end": lambda: add((_END, b"")),
        }
        self._parser = MultipartParser(boundary, callbacks, max_header_size=MAX_PART_HEADER_BYTES)
        self._headers: dict[str, bytes] = {}
        self._field, self._value = b"", b""
        self._part: str | None = None  # "file", "kind", "metadata", or None (ignored)
        self._buffer = bytearray()
        self._fields: dict[str, bytes] = {}
        self._original_name: str | None = None
        self._declared: str | None = None
        self._sniffed: str | None = None
        self._limit = policy.hard_cap_bytes
        self._size = 0
        self._file_done = False
        self._complete = False
        self.writer: SpoolWriter | None = None

    async def feed(self, chunk: bytes) -> None:
        """Parse one body chunk and spool or buffer what it holds.

        Raises:
            ApiError: 400/413/415/422 as soon as the body breaks a rule.
        """
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise ApiError(400, "malformed_multipart", f"malformed multipart body: {exc}") from None
        events = self._events.copy()
        self._events.clear()
        for kind, data in events:
            await self._on(kind, data)

    async def _on(self, kind: int, data: bytes) -> None:
        if kind == _BEGIN:
            self._headers, self._field, self._value = {}, b"", b""
        elif kind == _FIELD:
            self._field += data
        elif kind == _VALUE:
            self._value += data
        elif kind == _HEADER_END:
            self._headers[self._field.decode("latin-1").lower()] = self._value
            self._field, self._value = b"", b""
        elif kind == _HEADERS_DONE:
            self._start_part()
        elif kind == _DATA:
            await self._data(data)
        elif kind == _PART_END:
            await self._end_part()
        elif kind == _END:
            self._complete = True

    def _start_part(self) -> None:
        disposition = self._headers.get("content-disposition")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self._buffer = bytearray()
        self._part = name if name in ("file", "kind", "metadata") else None
        if name != "file":
            return
        if self._original_name is not None:
            raise ApiError(422, "invalid_request", "send exactly one part named `file`")
        filename = extended_filename(disposition)
        if filename is None and (plain := options.get(b"filename")) is not None:
            filename = plain.decode("utf-8", "replace")
        if filename is None:
            raise ApiError(
                422, "invalid_request", "the `file` part needs a filename (Content-Disposition)"
            )
        self._original_name = clean_name(filename)
        declared = self._headers.get("content-type")
        self._declared = declared.decode("latin-1") if declared is not None else None
        self._limit = self._policy.limit_bytes(self._original_name)

    async def _data(self, data: bytes) -> None:
        if self._part == "file":
            self._size += len(data)
            if self._size > self._limit:
                raise too_large("the file", self._limit)
            if self.writer is not None:
                await self.writer.write(data)
                return
            self._buffer += data
            if len(self._buffer) >= HEAD_BYTES:
                await self._open_spool()
        elif self._part == "metadata":
            self._buffer += data
            if len(self._buffer) > self._max_meta:
                raise too_large("the `metadata` field", self._max_meta)
        elif self._part == "kind":
            self._buffer += data
            if len(self._buffer) > MAX_KIND_CHARS * 4:  # 4 bytes per character at most
                raise long_kind()

    async def _open_spool(self) -> None:
        assert self._original_name is not None
        head = bytes(self._buffer)
        self._sniffed = sniff(head)
        accepted = self._policy.check(self._original_name, self._declared, self._sniffed)
        self._limit = accepted.max_bytes
        self.writer = await self._spool.open_writer(self._name, self._expected)
        await self.writer.write(head)
        self._buffer = bytearray()

    async def _end_part(self) -> None:
        if self._part == "file":
            if self._size == 0:
                raise ApiError(400, "empty_file", "empty file: the `file` part has no bytes")
            if self.writer is None:
                await self._open_spool()
            self._file_done = True
        elif self._part is not None:
            self._fields[self._part] = bytes(self._buffer)
        self._part = None

    async def finish(self) -> Upload:
        """Check the whole form, commit the spool file and describe it.

        Raises:
            ApiError: 400 ``malformed_multipart`` for a truncated body; 422 for a missing
                ``file`` part or a bad ``kind``/``metadata``.
        """
        if not self._complete:
            raise ApiError(400, "malformed_multipart", "multipart body ended before its end")
        if not self._file_done or self.writer is None or self._sniffed is None:
            raise ApiError(422, "invalid_request", "missing `file` field (a multipart file part)")
        kind = parse_kind(self._fields.get("kind"))
        metadata = parse_metadata(self._fields.get("metadata"))
        await self.writer.commit()
        assert self._original_name is not None
        return Upload(
            name=self._name,
            original_name=self._original_name,
            content_type=self._sniffed,
            size_bytes=self.writer.size_bytes,
            sha256=self.writer.sha256,
            kind=kind,
            metadata=metadata,
        )

    async def abort(self) -> None:
        """Remove the partial spool file, if any (idempotent)."""
        if self.writer is not None:
            await self.writer.abort()


async def read_upload(
    chunks: AsyncIterator[bytes],
    *,
    content_type: str | None,
    content_length: str | None,
    spool: Spool,
    policy: UploadPolicy,
    name: str,
    max_metadata_bytes: int,
) -> Upload:
    """Stream a multipart body into ``spool`` as ``name`` and return what was spooled.

    Leaves nothing in the spool unless it returns (no ``.partial`` either).

    Raises:
        ApiError: 400 empty/malformed/name too long, 413 too large, 415 type refused or not
            multipart, 422 missing ``file`` or bad fields, 507 no room in the spool (checked
            before the body is read, with ``content_length``, and when the file is opened).
    """
    boundary = boundary_of(content_type)
    max_body = policy.hard_cap_bytes + max_metadata_bytes + FORM_OVERHEAD_BYTES
    length = int(content_length) if content_length and content_length.isdigit() else 0
    if length > max_body:
        raise too_large("the request body", max_body)
    reader = FormReader(spool, policy, name, boundary, max_metadata_bytes, length)
    received = 0
    try:
        await spool.check_room(length)
        async for chunk in chunks:
            received += len(chunk)
            if received > max_body:
                raise too_large("the request body", max_body)
            await reader.feed(chunk)
        return await reader.finish()
    except PolicyRefusal as exc:
        await reader.abort()
        raise refused(exc) from None
    except SpoolFull as exc:
        await reader.abort()
        log.warning("gateway.spool_full", error=str(exc))
        raise insufficient_storage(exc) from None
    except BaseException:
        await reader.abort()
        raise
