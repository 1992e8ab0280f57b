"""The error tree of Sluice.

Retry is decided by type (dramatiq's ``Retries(retry_when=...)``): the run loop retries a
:class:`RetryableError` with jittered backoff and dead-letters a :class:`PermanentError` at once.
An exception that is neither is treated as retryable, so an unknown failure is never lost, and is
dead-lettered once the attempts are exhausted.

::

    SluiceError
    ├── ConfigError                  bad setting at start (names the variable)
    ├── ServiceStartError            a development service missing, not starting, or not healthy
    ├── GatewayStartError            the gateway could not start: a dependency, or its address
    ├── InvalidOwner                 an owner name outside the event contract's pattern
    ├── PolicyRefusal                a file outside the upload policy (type, size, name)
    ├── UnknownKey                   no single active API key matches
    ├── RetryableError               try again later: the fault is outside the message
    │   ├── BrokerUnavailable        RabbitMQ refused, closed, or did not confirm a publish
    │   ├── OutboxFull               the gateway's event outbox is at its bound, RabbitMQ away
    │   ├── StorageUnavailable       S3 connection refused, timeout, 5xx
    │   │   └── QuarantineUnavailable  the same, on the quarantine bucket (the S3 spool)
    │   ├── ScannerUnavailable       clamd unreachable, timeout, broken connection, error answer
    │   ├── DatabaseUnavailable      PostgreSQL connection lost or refused
    │   └── SpoolFull                the spool's disk cannot take an upload (full, or the floor)
    └── PermanentError               the message itself can never succeed
        ├── InvalidEvent             not JSON, wrong schema version, missing or bad fields
        ├── SourceMissing            the source reference points at nothing
        ├── ChecksumMismatch         bytes do not hash to the SHA-256 the event carries
        ├── InvalidSource            a source reference that is not allowed (bad scheme, traversal)
        ├── InvalidData              a value PostgreSQL refuses (bad encoding, NUL, out of range)
        ├── ForgedEvent              an event whose claims do not hold: another owner's file,
        │                            a key or bucket not the file's own, another file's spool
        ├── NotAllowed               an upstream service named what it may not (owner, bucket...)
        ├── ThumbnailError           bytes that cannot be made into a thumbnail (corrupt, bomb)
        ├── TextError                bytes no text can be read from (not a readable PDF or
        │                            image, an OCR language not installed, OCR timed out)
        └── VideoError               bytes that are not a decodable video, too long a video,
                                     ffmpeg past its time or killed

``ServiceStartError`` is also a ``RuntimeError``, ``InvalidOwner`` and ``PolicyRefusal`` a
``ValueError`` and ``UnknownKey`` a ``LookupError``, so callers that catch the built-in kind keep
working.
"""

from __future__ import annotations

from typing import Any


class SluiceError(Exception):
    """Root of every error Sluice raises on purpose.

    ``context`` carries what ops need to find the thing (bucket, key, file id, event id); it is
    bound to the log line and copied into dead-letter headers.
    """

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = context

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.message} ({details})"


class ConfigError(SluiceError):
    """A setting is missing or out of bounds; raised at start, naming the variable."""


class ServiceStartError(SluiceError, RuntimeError):
    """A development service (``shared.devservices``) is missing, would not start, or did not
    become healthy in time.

    The message names the service, its address, the last health-check failure and the log to
    read; ``context`` carries ``service``, ``address`` and ``log``.
    """


class GatewayStartError(SluiceError):
    """The gateway could not start: a dependency at start, or the listen address."""


class InvalidOwner(SluiceError, ValueError):
    """The owner name does not match ``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`` (the event contract)."""


class PolicyRefusal(SluiceError, ValueError):
    """A file outside the upload policy (``shared.policy``, seed 000).

    ``code`` names the rule, as the gateway answers it: ``unsupported_type`` (type outside the
    policy, or sniffed and claimed types disagree), ``too_large`` (the file over its type's
    limit, or the metadata over its cap), ``name_too_long``, ``invalid_request`` (no usable file
    name). The gateway answers it as an HTTP error; the scan stage rejects the file with reason
    ``policy``.
    """

    def __init__(self, code: str, message: str, **context: Any) -> None:
        super().__init__(message, **context)
        self.code = code


class UnknownKey(SluiceError, LookupError):
    """No active API key matches, or a prefix matches more than one."""


class RetryableError(SluiceError):
    """The work may succeed later: the fault is in a dependency, not in the message."""


class BrokerUnavailable(RetryableError):
    """RabbitMQ refused the connection, closed the channel, or did not confirm a publish."""


class OutboxFull(RetryableError):
    """RabbitMQ is away and ``SLUICE_GATEWAY_OUTBOX_MAX_EVENTS`` events already wait in the
    gateway's outbox (``shared.adapters.outbox``): the upload is refused with 503."""


class StorageUnavailable(RetryableError):
    """S3 refused the connection, timed out, or answered 5xx."""


class QuarantineUnavailable(StorageUnavailable):
    """The quarantine bucket (``SLUICE_SPOOL_BACKEND=s3``) cannot be read or written: S3 refused
    the connection, timed out, or answered 5xx.

    The bytes of such a file are in S3 already, so unlike another S3 outage of the store stage
    it does not go to the Base64 fallback: the stages that read the quarantine wait for S3 behind
    their circuit breaker (``shared.breaker``), and the gateway answers new uploads 503.
    """


class ScannerUnavailable(RetryableError):
    """clamd could not give a verdict: unreachable, timed out, or answered with an error."""


class DatabaseUnavailable(RetryableError):
    """PostgreSQL refused or lost the connection."""


class SpoolFull(RetryableError):
    """The spool's disk cannot take an upload: its free space minus the upload's expected size
    would go below ``SLUICE_SPOOL_MIN_FREE_BYTES``, or a write failed with ``ENOSPC`` or
    ``EDQUOT``. Nothing of the upload is left behind; it may succeed once space returns.

    The message says how much is free and how much was needed; ``context`` carries
    ``free_bytes``, ``needed_bytes``, ``min_free_bytes`` and ``spool`` (the directory). The
    gateway answers it 507 ``insufficient_storage``.
    """


class PermanentError(SluiceError):
    """The message can never succeed as it is; it goes to its dead-letter queue at once.

    A handler that declines a message on purpose (the fallback worker's file over its cap) does
    not raise: it returns a :class:`shared.stage.Refusal`, since control flow is not an error.
    """


class InvalidEvent(PermanentError):
    """The message is not a valid event: not JSON, unknown type or version, bad fields."""


class SourceMissing(PermanentError):
    """The event's source reference points at nothing (spool file or object is gone)."""


class InvalidData(PermanentError):
    """PostgreSQL refuses a value the message carries (invalid encoding, NUL, out of range):
    every retry would fail the same way (``shared.adapters.db.DATA_ERRORS``)."""


class NotAllowed(PermanentError):
    """What an upstream service published is outside what it may do: no verified ``user_id``,
    an unknown or removed upstream, an owner or a source bucket it was not given, metadata
    over the cap (docs/security.md). Dead-lettered in ``<prefix>.ingress.dlq`` with the reason;
    nothing reaches the pipeline."""


class InvalidSource(PermanentError):
    """The source reference is not allowed: unknown scheme, path traversal, foreign bucket."""


class ForgedEvent(PermanentError):
    """The event claims what is not so, and acting on it would touch what it does not own: an
    owner other than the file's recorded owner, a bucket other than Sluice's, an object key
    other than the owner's ``shared.naming.object_key``, a spool entry of another file
    (``shared.claims``). Dead-lettered at once; the message names what was claimed and what
    holds."""


class ChecksumMismatch(PermanentError):
    """The bytes read do not hash to the SHA-256 the event carries."""


class ThumbnailError(PermanentError):
    """The bytes cannot be made into a thumbnail; retrying will not help.

    The thumbnail stage catches it and emits ``file.thumbnailed`` without thumbnails (the file
    ends ``available``), the message as its ``thumbnail_error``: e.g. ``"decompression bomb:
    120000000 pixels > limit 50000000"``, ``"truncated image: ..."``, ``"cannot identify image:
    ..."``, ``"corrupt image: ..."``; ``context`` holds ``content_type``.
    """


class TextError(PermanentError):
    """No text can be read from the bytes; retrying will not help.

    The pdftext and ocr stages catch it and emit ``file.text_failed`` with the message as its
    ``reason`` (the file stays ``available``; docs/transforms.md): e.g. ``"not a readable PDF:
    Failed to load document (PDFium: Data format error)"``, ``"not a readable image: cannot
    identify image file"``, ``"OCR language not installed: deu"``, ``"OCR timed out after 60 s"``.
    """


class VideoError(PermanentError):
    """The bytes cannot be made into a poster frame and an HLS rendition; retrying will not help.

    The video stage catches it and emits ``file.video_failed`` with the message as its ``reason``
    (the file stays ``available``; docs/transforms.md): e.g. ``"not a decodable video: moov atom
    not found"``, ``"video too long: 900 s > limit 600 s"``, ``"ffmpeg timed out after 600 s"``.
    """
