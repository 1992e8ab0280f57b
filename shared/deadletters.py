"""Inspecting and replaying a stage's dead letters (``<prefix>.<stage>.dlq``).

:func:`list_dead_letters` reads a dead-letter queue without consuming it and
:func:`replay` moves dead letters back to their stage queue after a fix. Both work one message
at a time on their own channel.

**Reading without consuming.** AMQP 0-9-1 has no peek: the listing takes every message with
``basic.get`` (no auto-ack), then gives each back with ``basic.nack(requeue=True)`` in the
order it took them, waiting until each is ready again before the next. Measured on RabbitMQ
3.10 with quorum queues (``tests/integration/test_deadletters.py``):

- a nacked message goes to the *back* of a quorum queue without a delivery limit (a
  dead-letter queue); since the listing holds the whole queue, back is also front, and the
  order is kept;
- nacks sent back to back are not: with 32 requeues unconfirmed, the channel's quorum-queue
  client switches to batching (its soft limit), and batches came back reversed. Waiting for
  each requeue (the queue's ready count) costs about 5 ms a message;
- messages given back by *closing the channel* go to the front, but above a few dozen in hash
  order, so the listing only relies on that when it fails half-way;
- every requeue counts as a delivery: each listing adds one to every message's
  ``x-delivery-count``. Dead-letter queues are declared without ``x-delivery-limit``, so on
  RabbitMQ 3.x nothing is ever dropped for it (RabbitMQ 4.0 gives quorum queues a default
  limit of 20; see docs/operations.md).

A message that arrives while a listing runs is listed too, or, if it arrives after the last
get, ends up ahead of the listed ones. A consumer on the same queue would take messages as they
are given back (the listing then stops waiting and may reorder), so list a dead-letter queue
nothing consumes.

**Replaying safely.** Each message is copied to the stage queue (default exchange, never the
topic exchange, so no other stage sees it again) with a publisher confirm, and only then acked
from the dead-letter queue. A process killed in between leaves the message in both queues,
never in neither; the stages are idempotent by ``event_id`` (RabbitMQ: at-least-once delivery),
so the duplicate is harmless. A replay takes at most as many messages as the queue held when it
started, so a message that fails again at once and comes back is not replayed in a loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from shared import broker
from shared.errors import BrokerUnavailable, ConfigError
from shared.runner import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_FIRST_FAILED_AT,
    HEADER_LAST_FAILED_AT,
    HEADER_STAGE,
)
from shared.settings import AmqpSettings
from shared.topology import STAGES, Topology

HEADER_REPLAYED_FROM_ERROR = "x-sluice-replayed-from-error"
HEADER_REPLAYED_AT = "x-sluice-replayed-at"
# The previous failure's headers: dropped on replay (summarised in HEADER_REPLAYED_FROM_ERROR)
# so a new failure is recorded afresh by the run loop.
_FAILURE_HEADERS = (
    HEADER_ERROR_TYPE,
    HEADER_ERROR_MESSAGE,
    HEADER_FIRST_FAILED_AT,
    HEADER_LAST_FAILED_AT,
    HEADER_STAGE,
)
# Headers RabbitMQ sets itself (as in shared.runner): never copied into a new message.
_RETURN_WAIT_S = 2.0
_ERRORS = (aiormq.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError, OSError)
log = structlog.get_logger("sluice.deadletters")


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, as the run loop (or RabbitMQ) left it.

    Fields come from the ``x-sluice-*`` headers the run loop writes when it dead-letters
    (``shared.runner``). A message RabbitMQ dead-lettered itself (the stage queue's delivery
    limit, after consumers crashed on it) is described by its latest ``x-death`` entry instead:
    ``error_type`` is RabbitMQ's reason (``delivery_limit``) and ``attempts`` is ``None``.
    """

    message_id: str | None
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


@dataclass(frozen=True)
class ReplayResult:
    """What :func:`replay` did: counts are messages."""

    stage: str
    depth_at_start: int  # messages in the DLQ when the replay started
    planned: int  # min(depth_at_start, limit)
    replayed: int  # copied to the stage queue (confirmed) and acked from the DLQ
    message_ids: tuple[str | None, ...]  # of the replayed messages, in order


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = _text(value)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
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


def describe(message: AbstractIncomingMessage, stage: str) -> DeadLetter:
    """The :class:`DeadLetter` view of a message taken from ``stage``'s dead-letter queue."""
    headers: Mapping[str, Any] = message.headers or {}
    fields = _body_fields(message.body)
    error_type = _text(headers.get(HEADER_ERROR_TYPE))
    error_message = _text(headers.get(HEADER_ERROR_MESSAGE))
    attempts = _int(headers.get(HEADER_ATTEMPTS))
    first = _time(headers.get(HEADER_FIRST_FAILED_AT))
    last = _time(headers.get(HEADER_LAST_FAILED_AT))
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        # The run loop strips x-death when it dead-letters, so an x-death here means RabbitMQ
        # dead-lettered the message itself; its latest entry is the reason.
        death = deaths[0]
        reason = _text(death.get("reason")) or "dead-lettered"
        error_type = reason
        error_message = f"dead-lettered by RabbitMQ from {_text(death.get('queue'))} ({reason})"
        attempts = None
        last = _time(death.get("time")) or last
        first = first or last
    return DeadLetter(
        message_id=message.message_id,
        file_id=_text(fields.get("file_id")),
        owner=_text(fields.get("owner")),
        event_type=_text(fields.get("type")) or message.type,
        stage=stage,
        error_type=error_type,
        error_message=error_message,
        attempts=attempts,
        first_failed_at=first,
        last_failed_at=last,
        body_bytes=len(message.body),
        delivery_count=_int(headers.get("x-delivery-count")) or 0,
        replayed_at=_time(headers.get(HEADER_REPLAYED_AT)),
        replayed_from_error=_text(headers.get(HEADER_REPLAYED_FROM_ERROR)),
    )


async def _dead_letter_queue(
    channel: AbstractChannel, topology: Topology, stage: str
) -> tuple[AbstractQueue, int]:
    name = topology.dead_letter_queue(stage)
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise ConfigError(
            f"no queue {name}: is SLUICE_AMQP_PREFIX right, and has a service started?",
            queue=name,
        ) from None
    result = queue.declaration_result
    return queue, int(result.message_count or 0)


async def list_dead_letters(
    connection: AbstractRobustConnection,
    topology: Topology,
    stage: str,
    *,
    timeout_s: float = 10.0,
) -> list[DeadLetter]:
    """Every message in ``stage``'s dead-letter queue, head first, leaving the queue as it was.

    Holds the whole queue unacknowledged while it runs (dead letters are small events: bytes
    never travel through RabbitMQ). Each listing adds one to every message's
    ``x-delivery-count`` (see the module docstring for the order guarantees).

    Raises:
        ValueError: ``stage`` is not a stage name.
        ConfigError: the dead-letter queue does not exist (wrong prefix, topology never
            declared).
        BrokerUnavailable: the channel or connection failed; messages taken so far go back to
            the queue when the channel closes, possibly in another order.
    """
    _check_stage(stage)
    channel = await connection.channel(publisher_confirms=False)
    try:
        queue, _ = await _dead_letter_queue(channel, topology, stage)
        held: list[AbstractIncomingMessage] = []
        while (message := await queue.get(no_ack=False, fail=False, timeout=timeout_s)) is not None:
            held.append(message)
        letters = [describe(message, stage) for message in held]
        patient = True
        for returned, message in enumerate(held, start=1):
            await message.nack(requeue=True)
            if patient:
                # Requeues still unconfirmed are batched by the broker and a batch comes back
                # reversed: wait for this one before the next.
                patient = await _wait_until_ready(queue, returned, timeout_s)
        return letters
    except _ERRORS as exc:
        raise BrokerUnavailable(
            f"listing dead letters failed: {exc!r}", queue=topology.dead_letter_queue(stage)
        ) from exc
    finally:
        await _close(channel)


async def _close(channel: AbstractChannel) -> None:
    """Close ``channel``; unacknowledged messages go back to their queue."""
    if channel.is_closed:
        return
    try:
        await channel.close()
    except _ERRORS:
        pass  # the connection is gone: the broker requeues them all the same


async def _wait_until_ready(queue: AbstractQueue, count: int, timeout_s: float) -> bool:
    """Wait (at most ``_RETURN_WAIT_S``) until ``queue`` has ``count`` ready messages.

    Re-declares through the queue object: a passive ``declare_queue`` on a robust channel
    answers from aio-pika's cache with the first declaration's counts. Returns False on timeout
    (something else is consuming the queue).
    """
    deadline = asyncio.get_running_loop().time() + _RETURN_WAIT_S
    while True:
        result = await queue.declare(timeout=timeout_s)
        if int(result.message_count or 0) >= count:
            return True
        if asyncio.get_running_loop().time() > deadline:
            log.warning("requeue not seen; listing without waiting", queue=queue.name)
            return False
        await asyncio.sleep(0.001)


def _replayed_message(message: AbstractIncomingMessage, letter: DeadLetter) -> aio_pika.Message:
    headers = {
        key: value for key, value in (message.headers or {}).items() if key not in _FAILURE_HEADERS
    }
    previous = ": ".join(t for t in (letter.error_type, letter.error_message) if t)
    headers[HEADER_ATTEMPTS] = 1
    headers[HEADER_REPLAYED_FROM_ERROR] = previous or "unknown"
    headers[HEADER_REPLAYED_AT] = datetime.now(UTC).isoformat()
    return broker.republished(message, headers)


async def replay(
    connection: AbstractRobustConnection,
    topology: Topology,
    stage: str,
    *,
    limit: int | None = None,
    settings: AmqpSettings,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Move dead letters of ``stage`` back to its work queue, head first, one at a time.

    Each message goes to ``<prefix>.<stage>`` through the default exchange with
    ``x-sluice-attempts`` reset to 1, ``x-sluice-replayed-from-error`` (the previous
    ``"<error type>: <message>"``) and ``x-sluice-replayed-at`` (ISO 8601, UTC); the previous
    ``x-sluice-error-*``, failure times and RabbitMQ's ``x-death``/``x-delivery-count`` are
    dropped. It is acked from the dead-letter queue only after the publisher confirm.

    Stops when the queue is empty, ``limit`` messages are replayed, or as many as the queue
    held at the start are (messages that fail again meanwhile are not replayed again).
    ``on_progress(done, planned)`` is called before the first message and after each one.

    Raises:
        ValueError: ``stage`` is not a stage name, or ``limit`` < 0.
        BrokerUnavailable: a publish was not confirmed or the connection failed; the message
            being moved stays in the dead-letter queue (and, if it was confirmed but not yet
            acked, also in the stage queue). Messages already replayed stay replayed.
    """
    _check_stage(stage)
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    channel = await broker.open_channel(connection, settings)
    replayed: list[str | None] = []
    try:
        dead_letters, depth = await _dead_letter_queue(channel, topology, stage)
        # Only the default exchange is used: nothing is declared, so a wrong prefix creates
        # nothing (the dead-letter queue check above has already failed).
        events = await channel.get_exchange(topology.exchange, ensure=False)
        publisher = broker.Publisher(channel, events, settings.publish_timeout_s)
        planned = depth if limit is None else min(depth, limit)
        if on_progress is not None:
            on_progress(0, planned)
        target = topology.queue(stage)
        while len(replayed) < planned:
            message = await dead_letters.get(
                no_ack=False, fail=False, timeout=settings.publish_timeout_s
            )
            if message is None:
                break
            await publisher.publish_to_queue(
                target, _replayed_message(message, describe(message, stage))
            )
            await message.ack()
            replayed.append(message.message_id)
            if on_progress is not None:
                on_progress(len(replayed), planned)
    except (*_ERRORS, BrokerUnavailable) as exc:
        raise BrokerUnavailable(
            f"replay stopped after {len(replayed)} message(s): {exc!r}",
            queue=topology.dead_letter_queue(stage),
        ) from exc
    finally:
        await _close(channel)
    return ReplayResult(
        stage=stage,
        depth_at_start=depth,
        planned=planned,
        replayed=len(replayed),
        message_ids=tuple(replayed),
    )
