"""S3-compatible object storage through aiobotocore (AWS S3, MinIO, SeaweedFS).

Every upload sends ``ChecksumSHA256`` so the store itself refuses bytes that do not hash to what
we computed (AWS S3 docs, "Checking object integrity"; a mismatch is ``BadDigest``). Objects at
least ``multipart_threshold_bytes`` big go up as a multipart upload with a SHA-256 per part;
a failed multipart upload is aborted so no parts are left behind.

Library errors are wrapped: connection failures, timeouts, throttling and 5xx become
:class:`StorageUnavailable` (retried); a missing object :class:`SourceMissing`; a checksum the
store refused :class:`ChecksumMismatch`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import aiobotocore.session
import botocore.exceptions
from aiobotocore.config import AioConfig

from shared.adapters.encryption import sse_arguments
from shared.errors import (
    ChecksumMismatch,
    InvalidSource,
    PermanentError,
    SourceMissing,
    StorageUnavailable,
)
from shared.settings import S3Settings
from shared.telemetry import tracing
from shared.telemetry.metrics import STORED_BYTES

T = TypeVar("T")
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
_BAD_CHECKSUM = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
#: A conditional write's answer when the key exists (:meth:`S3ObjectStorage.put_new`).
_EXISTS = "PreconditionFailed"
_RETRYABLE_CODES = {
    "ConditionalRequestConflict",
    "SlowDown",
    "Throttling",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
}


def b64_sha256(hex_digest: str) -> str:
    """The base64 form S3 wants in ``ChecksumSHA256`` from a lowercase hex SHA-256."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``.

    Raises:
        InvalidSource: not an ``s3://`` URI with both a bucket and a key.
    """
    if not uri.startswith("s3://"):
        raise InvalidSource("not an s3:// reference", source=uri)
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise InvalidSource("s3:// reference needs a bucket and a key", source=uri)
    return bucket, key


@dataclass(frozen=True)
class ObjectInfo:
    """What S3 says about one object."""

    key: str
    size_bytes: int
    last_modified: datetime | None
    content_type: str | None = None
    checksum_sha256: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class S3ObjectStorage:
    """The object-storage port over one bucket; use ``async with`` to open and close it.

    Every S3 request runs in an OpenTelemetry CLIENT span ``S3.<Operation>``. With
    ``stored_bytes_stage`` set, the bytes of originals written (:meth:`put_bytes`,
    :meth:`put_multipart`) are counted in ``sluice_stored_bytes_total{stage=...}``.
    """

    def __init__(self, settings: S3Settings, *, stored_bytes_stage: str | None = None) -> None:
        self.settings = settings
        self.stored_bytes_stage = stored_bytes_stage
        self.bucket = settings.bucket_name
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> S3ObjectStorage:
        session = aiobotocore.session.get_session()
        config = AioConfig(
            s3={
                "addressing_style": "path" if self.settings.force_path_style else "auto",
                # Every body we send carries its SHA-256 in the signed x-amz-checksum-sha256
                # header, which S3 verifies: signing the payload too (SigV4's
                # x-amz-content-sha256, which botocore computes over plain HTTP) would hash
                # the same bytes a second time for no added integrity (docs/performance.md).
                "payload_signing_enabled": False,
            },
            signature_version="s3v4",
            connect_timeout=self.settings.timeout_s,
            read_timeout=self.settings.timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=self.settings.endpoint,
                region_name=self.settings.region,
                aws_access_key_id=self.settings.access_key,
                aws_secret_access_key=self.settings.secret_key,
                config=config,
            )
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    @property
    def client(self) -> Any:
        """The aiobotocore S3 client, open inside ``async with``: for the adapters that need an
        operation this class does not wrap (the quarantine spool, ``shared.adapters.quarantine``),
        called through :meth:`call`."""
        return self._client

    async def call(self, name: str, operation: Callable[[], Awaitable[T]], **context: Any) -> T:
        """Run the S3 ``operation`` (named ``name``, e.g. ``CopyObject``) in a CLIENT span,
        with library errors translated as everywhere in this module (``context`` names the
        ``bucket``, default this one, and ``key``).

        Raises:
            SourceMissing: 404 / NoSuchKey / NoSuchBucket. ChecksumMismatch: BadDigest.
            StorageUnavailable: unreachable, timeout, 429, 5xx. PermanentError: other 4xx.
        """
        return await self._call(name, operation, **context)

    async def _call(self, name: str, operation: Callable[[], Awaitable[T]], **context: Any) -> T:
        """Run the S3 ``operation`` (named ``name``, e.g. ``PutObject``) in a CLIENT span
        ``S3.<name>``, translating library errors (module docstring)."""
        context.setdefault("bucket", self.bucket)
        attributes = {"rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": name}
        attributes["aws.s3.bucket"] = str(context["bucket"])
        if "key" in context:
            attributes["aws.s3.key"] = str(context["key"])
        with tracing.client_span(f"S3.{name}", attributes, expected=(SourceMissing,)):
            return await self._translated(operation, context)

    async def _translated(self, operation: Callable[[], Awaitable[T]], context: Any) -> T:
        try:
            return await operation()
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            message = f"S3 {code or status}: {error.get('Message', '')}".strip()
            if code in _MISSING or status == 404:
                raise SourceMissing(message, **context) from exc
            if code in _BAD_CHECKSUM:
                raise ChecksumMismatch(message, **context) from exc
            if status >= 500 or status == 429 or code in _RETRYABLE_CODES:
                raise StorageUnavailable(message, **context) from exc
            raise PermanentError(message, **context) from exc
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.HTTPClientError,
            OSError,
            TimeoutError,
        ) as exc:
            raise StorageUnavailable(f"S3 unreachable: {exc!r}", **context) from exc

    def _count_stored(self, size_bytes: int) -> None:
        if self.stored_bytes_stage is not None:
            STORED_BYTES.labels(self.stored_bytes_stage).inc(size_bytes)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist."""
        try:
            await self._call("HeadBucket", lambda: self._client.head_bucket(Bucket=self.bucket))
        except SourceMissing:
            await self._call("CreateBucket", lambda: self._client.create_bucket(Bucket=self.bucket))

    async def ping(self) -> None:
        """HeadBucket: S3 answers and the bucket exists (readiness probes).

        Raises:
            SourceMissing: the bucket does not exist.
            StorageUnavailable: S3 down, timed out, 5xx.
            PermanentError: S3 refused the request (credentials, 403).
        """
        await self._call("HeadBucket", lambda: self._client.head_bucket(Bucket=self.bucket))

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        sha256_hex: str,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Upload ``data`` in one PUT that S3 verifies against ``sha256_hex``.

        ``metadata`` becomes the object's user metadata (``x-amz-meta-*``; ASCII values).

        Raises:
            ChecksumMismatch: S3 refused the bytes (BadDigest).
            StorageUnavailable: S3 down, timed out, 5xx.
        """
        arguments = self._put_arguments(key, data, sha256_hex, content_type, metadata)
        await self._call("PutObject", lambda: self._client.put_object(**arguments), key=key)
        self._count_stored(len(data))

    def _put_arguments(
        self,
        key: str,
        data: bytes,
        sha256_hex: str,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The ``PutObject`` arguments of a verified write (:meth:`put_bytes`, :meth:`put_new`)."""
        return {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
            "ChecksumSHA256": b64_sha256(sha256_hex),
            "Metadata": metadata or {},
            **sse_arguments(self.settings),
        }

    async def put_new(self, key: str, data: bytes, *, sha256_hex: str, content_type: str) -> bool:
        """:meth:`put_bytes` as a conditional write (``If-None-Match: *``, AWS S3 docs,
        "Conditional writes"): ``False`` when an object is at ``key`` already (412
        PreconditionFailed), which is then left as it is. A store that ignores the condition
        writes the bytes, as :meth:`put_bytes` would.

        Raises:
            ChecksumMismatch: S3 refused the bytes (BadDigest).
            StorageUnavailable: S3 down, timed out, 5xx, or a concurrent conditional write of
                the same key (409 ConditionalRequestConflict: retried).
        """

        arguments = self._put_arguments(key, data, sha256_hex, content_type)

        async def put() -> bool:
            try:
                await self._client.put_object(**arguments, IfNoneMatch="*")
            except botocore.exceptions.ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 412 or exc.response.get("Error", {}).get("Code") == _EXISTS:
                    return False
                raise
            return True

        written = await self._call("PutObject", put, key=key)
        if written:
            self._count_stored(len(data))
        return written

    async def put_multipart(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        sha256_hex: str,
        content_type: str,
    ) -> None:
        """Upload ``chunks`` as a multipart upload with a SHA-256 per part, S3-verified.

        The whole stream is hashed on the way; if it does not match ``sha256_hex`` the upload is
        aborted before completion, so no object appears. S3's ``ChecksumSHA256`` of the result is
        a checksum of the part checksums (``<base64>-<parts>``, type COMPOSITE), so the whole
        SHA-256 is also kept as user metadata ``sha256`` (hex) for :meth:`head` readers.

        Raises:
            ChecksumMismatch: the stream's SHA-256 is not ``sha256_hex``, or S3 refused a part.
            StorageUnavailable: S3 down, timed out, 5xx.
        """
        part_size = self.settings.part_size_bytes
        created = await self._call(
            "CreateMultipartUpload",
            lambda: self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                # S3 keeps only a checksum of the part checksums; keep the whole SHA-256 too.
                Metadata={"sha256": sha256_hex},
                **sse_arguments(self.settings),
            ),
            key=key,
        )
        upload_id = created["UploadId"]
        whole = hashlib.sha256()
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        total = 0

        async def send(body: bytes) -> None:
            number = len(parts) + 1
            checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
            answer = await self._call(
                "UploadPart",
                lambda: self._client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ChecksumSHA256=checksum,
                ),
                key=key,
                part=number,
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": checksum})

        try:
            async for chunk in chunks:
                whole.update(chunk)
                total += len(chunk)
                buffer += chunk
                while len(buffer) >= part_size:
                    await send(bytes(buffer[:part_size]))
                    del buffer[:part_size]
            if buffer or not parts:
                await send(bytes(buffer))
            if whole.hexdigest() != sha256_hex:
                raise ChecksumMismatch(
                    "bytes read do not match the event's SHA-256",
                    key=key,
                    expected=sha256_hex,
                    actual=whole.hexdigest(),
                )
            await self._call(
                "CompleteMultipartUpload",
                lambda: self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
                key=key,
            )
            self._count_stored(total)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
            raise

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo | None:
        """The object's size, type and stored SHA-256, or ``None`` if it does not exist."""
        target = bucket or self.bucket
        try:
            answer = await self._call(
                "HeadObject",
                lambda: self._client.head_object(Bucket=target, Key=key, ChecksumMode="ENABLED"),
                bucket=target,
                key=key,
            )
        except SourceMissing:
            return None
        return ObjectInfo(
            key=key,
            size_bytes=int(answer["ContentLength"]),
            last_modified=answer.get("LastModified"),
            content_type=answer.get("ContentType"),
            checksum_sha256=answer.get("ChecksumSHA256"),
            metadata=dict(answer.get("Metadata") or {}),
        )

    async def get_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        """The whole object.

        Raises:
            SourceMissing: no such object.
            StorageUnavailable: S3 down.
        """
        target = bucket or self.bucket

        async def fetch() -> bytes:
            answer = await self._client.get_object(Bucket=target, Key=key)
            async with answer["Body"] as body:
                data: bytes = await body.read()
            return data

        return await self._call("GetObject", fetch, bucket=target, key=key)

    @contextlib.asynccontextmanager
    async def open_stream(
        self, key: str, chunk_bytes: int = 256 * 1024, byte_range: tuple[int, int] | None = None
    ) -> AsyncIterator[tuple[ObjectInfo, AsyncIterator[bytes]]]:
        """Open the object for streaming: yields its info and an iterator of chunks; with
        ``byte_range`` ``(first, last)``, a ranged ``GetObject`` (``Range: bytes=first-last``)
        whose info still gives the whole object's size (from ``Content-Range``).

        Raises:
            SourceMissing: no such object.
            StorageUnavailable: S3 down.
        """
        ranged = {}
        if byte_range is not None:
            ranged["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        answer = await self._call(
            "GetObject",
            lambda: self._client.get_object(Bucket=self.bucket, Key=key, **ranged),
            key=key,
        )
        size = int(answer["ContentLength"])
        if byte_range is not None and (whole := answer.get("ContentRange")):
            size = int(whole.rsplit("/", 1)[1])  # "bytes 0-99/1234"
        info = ObjectInfo(
            key=key,
            size_bytes=size,
            last_modified=answer.get("LastModified"),
            content_type=answer.get("ContentType"),
        )
        body = answer["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await body.read(chunk_bytes):
                yield chunk

        try:
            yield info, chunks()
        finally:
            body.close()

    async def copy(
        self, source_key: str, key: str, *, sha256_hex: str, size_bytes: int, content_type: str
    ) -> None:
        """CopyObject ``source_key`` → ``key`` in this bucket, asking S3 for the copy's SHA-256
        (``ChecksumAlgorithm=SHA256``), then prove it: a HEAD (``ChecksumMode=ENABLED``) whose
        ``ChecksumSHA256`` is ``sha256_hex``, or, from a server that keeps no such checksum of
        a copy, the copy read back and hashed (AWS S3 docs, "Checking object integrity").
        ``sha256`` metadata is written with it, as for a multipart upload. A copy of another
        size or SHA-256 is deleted.

        Raises:
            SourceMissing: no object at ``source_key``.
            ChecksumMismatch: the copy is not ``size_bytes`` bytes of SHA-256 ``sha256_hex``.
            StorageUnavailable: S3 down, timed out, 5xx.
        """
        context = {"source_key": source_key, "key": key}
        await self._call(
            "CopyObject",
            lambda: self._client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": source_key},
                ChecksumAlgorithm="SHA256",
                MetadataDirective="REPLACE",
                ContentType=content_type,
                Metadata={"sha256": sha256_hex},
            ),
            **context,
        )
        copied = await self.head(key)
        if copied is None:
            raise SourceMissing("the copy is not there after CopyObject", **context)
        actual = copied.checksum_sha256 or ""
        proven = copied.size_bytes == size_bytes and actual == b64_sha256(sha256_hex)
        if not proven and copied.size_bytes == size_bytes and (not actual or "-" in actual):
            digest = hashlib.sha256()
            async with self.open_stream(key) as (_, chunks):
                async for chunk in chunks:
                    digest.update(chunk)
            actual = digest.hexdigest()
            proven = actual == sha256_hex
        if not proven:
            await self.delete(key)
            raise ChecksumMismatch(
                "the copy is not the original: size or SHA-256 differs",
                expected=sha256_hex,
                actual=actual,
                **context,
            )

    async def delete(self, key: str) -> None:
        """Delete the object (no error if it is already gone)."""
        await self._call(
            "DeleteObject", lambda: self._client.delete_object(Bucket=self.bucket, Key=key), key=key
        )

    async def presigned_get_url(
        self,
        key: str,
        ttl_s: int | None = None,
        *,
        download_name: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A presigned GET URL valid for ``ttl_s`` seconds (default ``presign_ttl_s``).

        With ``download_name`` (already percent-encoded) S3 answers it as an ``attachment`` of
        that name, with ``content_type`` as that ``Content-Type``, whatever the object was
        stored with (GetObject's ``response-content-disposition``/``-type``, which the
        signature covers). S3 can override no other header: no ``nosniff``, no CSP.
        """
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if download_name is not None:
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{download_name}"
        if content_type is not None:
            params["ResponseContentType"] = content_type
        url: str = await self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=ttl_s or self.settings.presign_ttl_s
        )
        return url

    async def list_objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``, page by page (bounded memory)."""
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"],
                    size_bytes=int(item["Size"]),
                    last_modified=item.get("LastModified"),
                )
