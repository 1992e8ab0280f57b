"""The error tree of Sluice.

Retry is decided by type (dramatiq's ``Retries(retry_when=...)``): the run loop retries a
:class:`RetryableError` with jittered backoff and dead-letters a :class:`PermanentError` at once.
An exception that is neither is treated as retryable, so an unknown failure is never lost, and is
dead-lettered once the attempts are exhausted.

::

    SluiceError
    ├── ConfigError                  bad setting at start (names the variable)
    ├── RetryableError               try again later: the fault is outside the message
    │   ├── BrokerUnavailable        RabbitMQ refused, closed, or did not confirm a publish
    │   ├── StorageUnavailable       S3 connection refused, timeout, 5xx
    │   ├── ScannerUnavailable       clamd unreachable, timeout, broken connection, error answer
    │   └── DatabaseUnavailable      PostgreSQL connection lost or refused
    └── PermanentError               the message itself can never succeed
        ├── InvalidEvent             not JSON, wrong schema version, missing or bad fields
        ├── SourceMissing            the source reference points at nothing
        ├── ChecksumMismatch         bytes do not hash to the SHA-256 the event carries
        └── InvalidSource            a source reference that is not allowed (bad scheme, traversal)
"""

from __future__ import annotations

from collections.abc import Sequence
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


class RetryableError(SluiceError):
    """The work may succeed later: the fault is in a dependency, not in the message."""


class BrokerUnavailable(RetryableError):
    """RabbitMQ refused the connection, closed the channel, or did not confirm a publish."""


class StorageUnavailable(RetryableError):
    """S3 refused the connection, timed out, or answered 5xx."""


class ScannerUnavailable(RetryableError):
    """clamd could not give a verdict: unreachable, timed out, or answered with an error."""


class DatabaseUnavailable(RetryableError):
    """PostgreSQL refused or lost the connection."""


class PermanentError(SluiceError):
    """The message can never succeed as it is; it goes to its dead-letter queue at once.

    ``announce`` lists events (``shared.events`` models) the run loop publishes, confirmed,
    before dead-lettering, so a file's status can say why it waits there.
    """

    announce: Sequence[Any] = ()


class InvalidEvent(PermanentError):
    """The message is not a valid event: not JSON, unknown type or version, bad fields."""


class SourceMissing(PermanentError):
    """The event's source reference points at nothing (spool file or object is gone)."""


class InvalidSource(PermanentError):
    """The source reference is not allowed: unknown scheme, path traversal, foreign bucket."""


class ChecksumMismatch(PermanentError):
    """The bytes read do not hash to the SHA-256 the event carries."""
