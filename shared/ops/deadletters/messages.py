"""What a dead-lettered message says: its summary, its whole detail and history, and the copies
a replay or a purge makes of it.

The run loop (``shared.runner``) dead-letters a message with ``x-sluice-*`` headers giving the
stage, the error and the attempts. A replay (``shared.ops.deadletters.replay``) drops those, resets
``x-sluice-attempts`` and appends the failure it came from to ``x-sluice-replays`` (an AMQP
array of tables, the last :data:`REPLAYS_KEPT`), so a message that fails again carries its whole
story: every failure, every replay, and RabbitMQ's own ``x-death`` when the broker dead-lettered
it (a stage queue's delivery limit).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from shared.adapters import broker
from shared.events import FileDeadLetterPurged, parse_event
from shared.retry import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_FIRST_FAILED_AT,
    HEADER_LAST_FAILED_AT,
    HEADER_STAGE,
)

HEADER_REPLAYED_FROM_ERROR = "x-sluice-replayed-from-error"
HEADER_REPLAYED_AT = "x-sluice-replayed-at"
#: How many times the message was replayed (a dead letter that comes back again counts on).
HEADER_REPLAY_COUNT = "x-sluice-replay-count"
#: The failures replays came from, oldest first: tables of ``replayed_at``, ``stage``,
#: ``error_type``, ``error_message``, ``attempts``, ``first_failed_at``, ``last_failed_at``.
HEADER_REPLAYS = "x-sluice-replays"
#: Entries of :data:`HEADER_REPLAYS` kept (the oldest are dropped): headers stay small.
REPLAYS_KEPT = 20
# The previous failure's headers: dropped on replay (kept in HEADER_REPLAYS) so a new failure
# is recorded afresh by the run loop.
_FAILURE_HEADERS = (
    HEADER_ERROR_TYPE,
    HEADER_ERROR_MESSAGE,
    HEADER_FIRST_FAILED_AT,
    HEADER_LAST_FAILED_AT,
    HEADER_STAGE,
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, as the run loop (or RabbitMQ) left it.

    Fields come from the ``x-sluice-*`` headers the run loop writes when it dead-letters
    (``shared.retry``). A message RabbitMQ dead-lettered itself (the stage queue's delivery
    limit, after consumers crashed on it) is described by its latest ``x-death`` entry instead:
    ``error_type`` is RabbitMQ's reason (``delivery_limit``) and ``attempts`` is ``None``.
    ``stage`` is the dead-letter queue's stage (where a replay sends it); ``failed_stage`` the
    stage that gave up on it (``fallback`` for the fallback worker's refusals in the store
    stage's queue).
    """

    message_id: str | None  # the event's event_id for every message Sluice publishes
    file_id: str | None  # from the JSON body; None when the body is not a JSON object with one
    owner: str | None
    event_type: str | None  # the body's ``type``, else the AMQP ``type`` property
    stage: str
    error_type: str | None
    error_message: str | None
    attempts: int | None  # x-sluice-attempts: handling attempts before dead-lettering
    first_failed_at: datetime | None  # UTC
    last_failed_at: datetime | None  # UTC
    body_bytes: int
    delivery_count: int  # x-delivery-count in the DLQ: times handed out and given back before
    replayed_at: datetime | None  # set if it was replayed before and failed again
    replayed_from_error: str | None
    replay_count: int = 0
    failed_stage: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The fields as a JSON object; times as ISO 8601 strings."""
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class DeadLetterDetail:
    """A whole dead-lettered message (``sluice dlq show``), every part JSON-safe.

    ``properties``: the AMQP properties that are set (``message_id``, ``type``,
    ``content_type``, ``timestamp``...); ``headers``: every header; ``body``: the parsed JSON,
    or the text when it is not JSON; ``history``: oldest first, entries with ``event``
    ``failed`` (``stage``, ``error_type``, ``error_message``, ``attempts``, ``at``),
    ``replayed`` (``at``, ``from_error``) or ``dead-lettered by RabbitMQ`` (an ``x-death``
    entry: ``queue``, ``reason``, ``count``, ``at``).
    """

    letter: DeadLetter
    properties: dict[str, Any]
    headers: dict[str, Any]
    body: Any
    history: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """The detail as one JSON object (the letter under ``letter``)."""
        return {
            "letter": self.letter.as_json(),
            "properties": self.properties,
            "headers": self.headers,
            "body": self.body,
            "history": self.history,
        }


def text(value: Any) -> str | None:
    """A header value as text (AMQP long strings may arrive as bytes); None stays None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    raw = text(value)
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _body_fields(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def json_safe(value: Any) -> Any:
    """``value`` (AMQP header values: bytes, datetimes, decimals, tables, arrays) as JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _deaths(headers: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return []
    return [death for death in deaths if isinstance(death, Mapping)]


def describe(message: AbstractIncomingMessage, stage: str) -> DeadLetter:
    """The :class:`DeadLetter` view of a message taken from ``stage``'s dead-letter queue."""
    headers: Mapping[str, Any] = message.headers or {}
    fields = _body_fields(message.body)
    error_type = text(headers.get(HEADER_ERROR_TYPE))
    error_message = text(headers.get(HEADER_ERROR_MESSAGE))
    attempts = _int(headers.get(HEADER_ATTEMPTS))
    first = _time(headers.get(HEADER_FIRST_FAILED_AT))
    last = _time(headers.get(HEADER_LAST_FAILED_AT))
    failed_stage = text(headers.get(HEADER_STAGE))
    deaths = _deaths(headers)
    if deaths:
        # The run loop strips x-death when it dead-letters, so an x-death here means RabbitMQ
        # dead-lettered the message itself; its latest entry is the reason.
        death = deaths[0]
        reason = text(death.get("reason")) or "dead-lettered"
        queue = text(death.get("queue"))
        error_type = reason
        error_message = f"dead-lettered by RabbitMQ from {queue} ({reason})"
        attempts = None
        last = _time(death.get("time")) or last
        first = first or last
        failed_stage = failed_stage or stage
    return DeadLetter(
        message_id=message.message_id,
        file_id=text(fields.get("file_id")),
        owner=text(fields.get("owner")),
        event_type=text(fields.get("type")) or message.type,
        stage=stage,
        error_type=error_type,
        error_message=error_message,
        attempts=attempts,
        first_failed_at=first,
        last_failed_at=last,
        body_bytes=len(message.body),
        delivery_count=_int(headers.get("x-delivery-count")) or 0,
        replayed_at=_time(headers.get(HEADER_REPLAYED_AT)),
        replayed_from_error=text(headers.get(HEADER_REPLAYED_FROM_ERROR)),
        replay_count=_int(headers.get(HEADER_REPLAY_COUNT)) or 0,
        failed_stage=failed_stage,
    )


def _failure(letter: DeadLetter) -> dict[str, Any]:
    """``letter``'s failure as a table (no None values: AMQP tables carry them poorly)."""
    entry = {
        "stage": letter.failed_stage or letter.stage,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "attempts": letter.attempts,
        "first_failed_at": letter.first_failed_at.isoformat() if letter.first_failed_at else None,
        "last_failed_at": letter.last_failed_at.isoformat() if letter.last_failed_at else None,
    }
    return {key: value for key, value in entry.items() if value is not None}


def _replays(headers: Mapping[str, Any]) -> list[dict[str, Any]]:
    replays = headers.get(HEADER_REPLAYS)
    if not isinstance(replays, list):
        return []
    return [json_safe(entry) for entry in replays if isinstance(entry, Mapping)]


def history(message: AbstractIncomingMessage, letter: DeadLetter) -> list[dict[str, Any]]:
    """The message's story, oldest first (see :class:`DeadLetterDetail`)."""
    headers: Mapping[str, Any] = message.headers or {}
    story: list[dict[str, Any]] = []
    for replay in _replays(headers):
        failure = {k: v for k, v in replay.items() if k != "replayed_at"}
        story.append({"event": "failed", "at": failure.get("last_failed_at"), **failure})
        story.append(
            {
                "event": "replayed",
                "at": replay.get("replayed_at"),
                "from_error": ": ".join(
                    str(replay[k]) for k in ("error_type", "error_message") if replay.get(k)
                ),
            }
        )
    for death in reversed(_deaths(headers)):  # x-death is newest first
        story.append(
            {
                "event": "dead-lettered by RabbitMQ",
                "at": json_safe(death.get("time")),
                "queue": text(death.get("queue")),
                "reason": text(death.get("reason")),
                "count": _int(death.get("count")),
            }
        )
    if HEADER_ERROR_TYPE in headers:  # the run loop's failure (not one RabbitMQ reported)
        failure = _failure(letter)
        story.append({"event": "failed", "at": failure.get("last_failed_at"), **failure})
    return story


def _body(message: AbstractIncomingMessage) -> Any:
    try:
        return json.loads(message.body)
    except ValueError:
        return message.body.decode("utf-8", "replace")


def _properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    properties = {
        "message_id": message.message_id,
        "type": message.type,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "correlation_id": message.correlation_id,
        "timestamp": message.timestamp,
        "app_id": message.app_id,
        "delivery_mode": int(message.delivery_mode) if message.delivery_mode else None,
        "priority": message.priority,
        "expiration": message.expiration,
        "routing_key": message.routing_key,
        "exchange": message.exchange,
        "redelivered": message.redelivered,
    }
    return {key: json_safe(value) for key, value in properties.items() if value is not None}


def detail(message: AbstractIncomingMessage, stage: str) -> DeadLetterDetail:
    """The whole of a message taken from ``stage``'s dead-letter queue."""
    letter = describe(message, stage)
    return DeadLetterDetail(
        letter=letter,
        properties=_properties(message),
        headers=json_safe(dict(message.headers or {})),
        body=_body(message),
        history=history(message, letter),
    )


def replayed_message(
    message: AbstractIncomingMessage, letter: DeadLetter, now: datetime, own_user: str | None
) -> aio_pika.Message:
    """The copy of dead letter ``message`` a replay publishes to its stage queue.

    ``x-sluice-attempts`` is 1 again, the previous failure's ``x-sluice-error-*``, failure
    times and stage are dropped (and appended to ``x-sluice-replays``), ``x-sluice-replayed-at``
    is ``now`` and ``x-sluice-replayed-from-error`` the previous ``"<error type>: <message>"``,
    ``x-sluice-replay-count`` goes up by one; RabbitMQ's own headers are dropped
    (``broker.republished``); body, properties and every other header travel on, and so does
    who first published it (``user_id`` checked by the ingress stage), vouched for by
    ``own_user``, the RabbitMQ user the replay publishes as.
    """
    headers = message.headers or {}
    kept: dict[str, Any] = {k: v for k, v in headers.items() if k not in _FAILURE_HEADERS}
    previous = ": ".join(t for t in (letter.error_type, letter.error_message) if t)
    replays = [*_replays(headers), {"replayed_at": now.isoformat(), **_failure(letter)}]
    kept[HEADER_ATTEMPTS] = 1
    kept[HEADER_REPLAYED_FROM_ERROR] = previous or "unknown"
    kept[HEADER_REPLAYED_AT] = now.isoformat()
    kept[HEADER_REPLAY_COUNT] = letter.replay_count + 1
    kept[HEADER_REPLAYS] = replays[-REPLAYS_KEPT:]
    return broker.republished(message, kept, own_user=own_user)


def purge_record(
    message: AbstractIncomingMessage, letter: DeadLetter, reason: str
) -> FileDeadLetterPurged | None:
    """The ``file.dead_letter_purged`` event recording the purge of ``message``, or None when
    its body is not a valid event (no file to record it against)."""
    try:
        event = parse_event(message.body)
    except ValidationError:
        return None
    return FileDeadLetterPurged.about(
        event,
        stage=letter.stage,
        error_type=letter.error_type,
        error_message=letter.error_message,
        reason=reason,
    )
