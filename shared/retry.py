"""The retry policy of the run loop, and the ``x-sluice-*`` headers it keeps on a message.

A failure that is not a :class:`~shared.errors.PermanentError` is retried: the message goes to
its stage's wait queue with a jittered exponential backoff (:func:`backoff_delay_s`) as its
per-message TTL, and after ``SLUICE_AMQP_MAX_ATTEMPTS`` handlings to the stage's dead-letter
queue. Attempts are counted in our own header (RabbitMQ owns ``x-death``), per stage: a dead
letter routed on to another stage (the store stage's S3-outage dead letters to the fallback
worker) starts that stage at attempt 1 (:func:`attempt_of`).

Every retry and dead letter carries the headers :func:`failure_headers` writes:

==============================  ===========================================================
``x-sluice-stage``              the stage that failed the message
``x-sluice-attempts``           the attempt the message comes back for (a retry), or the
                                attempts spent (a dead letter)
``x-sluice-error-type``         the exception's class name, e.g. ``StorageUnavailable``
``x-sluice-error-message``      its text, at most 1000 characters
``x-sluice-first-failed-at``    ISO 8601 UTC time of the first failure (kept across retries)
``x-sluice-last-failed-at``     ISO 8601 UTC time of this failure
==============================  ===========================================================

:class:`FailureHistory` reads them back for a handler that needs them (the fallback worker
records why the store stage gave up); ``shared.ops.deadletters`` reads them for ops.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import tenacity

from shared.events import BaseEvent, FileDeadLettered, FileDeadLetterPurged
from shared.topology import is_dead_letter_route

HEADER_ATTEMPTS = "x-sluice-attempts"
HEADER_ERROR_TYPE = "x-sluice-error-type"
HEADER_ERROR_MESSAGE = "x-sluice-error-message"
HEADER_FIRST_FAILED_AT = "x-sluice-first-failed-at"
HEADER_LAST_FAILED_AT = "x-sluice-last-failed-at"
HEADER_STAGE = "x-sluice-stage"

#: Longest ``x-sluice-error-message``, characters.
ERROR_MESSAGE_CHARS = 1000


def backoff_delay_s(attempt: int, base_s: float, max_s: float) -> float:
    """Equal-jitter exponential backoff before retry ``attempt`` (1 = first retry), seconds.

    With ``c = min(max_s, base_s * 2 ** (attempt - 1))`` (tenacity's ``wait_exponential``), the
    delay is uniform in ``[c / 2, c]`` ("equal jitter", AWS Architecture Blog, "Exponential
    Backoff And Jitter"). The floor matters: it makes the retry budget, the least time a
    message keeps being retried before it is dead-lettered, predictable
    (``sum(c_n / 2)``), so an outage shorter than the budget dead-letters nothing; full jitter
    could spend every attempt within the first second of an outage.
    """
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    ceiling = float(tenacity.wait_exponential(multiplier=base_s, max=max_s)(state))
    return random.uniform(ceiling / 2, ceiling)


def retry_budget_s(max_attempts: int, base_s: float, max_s: float) -> float:
    """The least total backoff, seconds, a message waits before ``max_attempts`` are spent."""
    return float(
        sum(min(max_s, base_s * 2.0 ** (attempt - 1)) / 2 for attempt in range(1, max_attempts))
    )


def attempt_of(headers: Mapping[str, Any], stage: str) -> int:
    """Which handling of the message by ``stage`` this is (1 = the first), from ``headers``.

    The count is per stage: a message last failed by another stage starts at 1.
    """
    if headers.get(HEADER_STAGE, stage) != stage:
        return 1
    return int(headers.get(HEADER_ATTEMPTS, 1) or 1)


def failure_headers(
    headers: Mapping[str, Any],
    *,
    stage: str,
    error_type: str,
    error_message: str,
    attempts: int,
) -> dict[str, Any]:
    """``headers`` with the failure of the message in ``stage`` recorded (see the module
    docstring): ``attempts`` is the next attempt for a retry, the attempts spent for a dead
    letter; the first failure's time is kept."""
    now = datetime.now(UTC).isoformat()
    return {
        **headers,
        HEADER_STAGE: stage,
        HEADER_ERROR_TYPE: error_type,
        HEADER_ERROR_MESSAGE: shorten(error_message, ERROR_MESSAGE_CHARS),
        HEADER_FIRST_FAILED_AT: headers.get(HEADER_FIRST_FAILED_AT, now),
        HEADER_LAST_FAILED_AT: now,
        HEADER_ATTEMPTS: attempts,
    }


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the last one ``…`` when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class FailureHistory:
    """The last failure a message's headers record (:func:`failure_headers`); every field
    ``None`` for a message that never failed.

    ``stage`` failed it ``attempts`` times (the attempts spent, for a dead letter), the last
    time with an ``error_type`` exception saying ``error_message``.
    """

    stage: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    attempts: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any]) -> FailureHistory:
        """The history in ``headers`` (AMQP header values; long strings may be bytes)."""
        attempts = headers.get(HEADER_ATTEMPTS)
        return cls(
            stage=_text(headers.get(HEADER_STAGE)),
            error_type=_text(headers.get(HEADER_ERROR_TYPE)),
            error_message=_text(headers.get(HEADER_ERROR_MESSAGE)),
            attempts=None if attempts is None else int(attempts),
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dead_letter_notice(
    event: BaseEvent | None, route: str, headers: Mapping[str, Any]
) -> FileDeadLettered | None:
    """The ``file.dead_lettered`` announcing that ``event`` is dead-lettered with routing key
    ``route`` and the failure ``headers`` (:func:`failure_headers`), or None: for a route to
    the fallback worker (not a dead-letter queue: :func:`shared.topology.is_dead_letter_route`),
    a message that is no event, and the notices and purge records themselves (a notice that
    cannot be recorded must not announce itself forever)."""
    if (
        event is None
        or not is_dead_letter_route(route)
        or isinstance(event, FileDeadLettered | FileDeadLetterPurged)
    ):
        return None
    return FileDeadLettered.about(
        event,
        stage=str(headers[HEADER_STAGE]),
        error_type=str(headers[HEADER_ERROR_TYPE]),
        error_message=str(headers[HEADER_ERROR_MESSAGE]),
        attempts=int(headers[HEADER_ATTEMPTS]),
        failed_at=datetime.fromisoformat(str(headers[HEADER_LAST_FAILED_AT])),
    )
