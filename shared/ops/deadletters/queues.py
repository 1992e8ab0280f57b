"""Reading the stages' dead-letter queues without consuming them: :class:`Selection`,
:func:`list_dead_letters`, :func:`show_dead_letter`, and the holding of a queue that
``shared.ops.deadletters.moves`` builds on. How and why: ``shared.ops.deadletters``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from shared.adapters import broker
from shared.errors import BrokerUnavailable, ConfigError
from shared.ops.deadletters.messages import DeadLetter, DeadLetterDetail, describe, detail
from shared.settings import AmqpSettings
from shared.topology import DEAD_LETTER_STAGES, Topology

_RETURN_WAIT_S = 2.0
_ERRORS = (aiormq.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError, OSError)
log = structlog.get_logger("sluice.deadletters")


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operation takes; the defaults take every one.

    ``stages``: whose dead-letter queues; ``error_type``: exactly this ``x-sluice-error-type``
    (or RabbitMQ's reason, e.g. ``delivery_limit``); ``older_than_s``: last failure at least
    this many seconds ago (a message without a failure time never matches); ``file_id``: this
    file only (a UUID, any case); ``owner``: this owner's files only (``sluice gdpr erase``).

    Raises:
        ValueError: an unknown stage, no stage, or a negative ``older_than_s``.
    """

    stages: tuple[str, ...] = DEAD_LETTER_STAGES
    error_type: str | None = None
    older_than_s: float | None = None
    file_id: str | None = None
    owner: str | None = None

    def __post_init__(self) -> None:
        unknown = [stage for stage in self.stages if stage not in DEAD_LETTER_STAGES]
        if unknown or not self.stages:
            raise ValueError(
                f"unknown stage {unknown or '(none)'}; one of {', '.join(DEAD_LETTER_STAGES)}"
            )
        if self.older_than_s is not None and self.older_than_s < 0:
            raise ValueError("older_than_s must be >= 0")

    @property
    def everything(self) -> bool:
        """Whether every message of the selected stages matches (no filter but the stages)."""
        return (
            self.error_type is None
            and self.older_than_s is None
            and self.file_id is None
            and self.owner is None
        )

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
        """Whether ``letter`` is selected, its age taken at ``now`` (UTC)."""
        if letter.stage not in self.stages:
            return False
        if self.error_type is not None and letter.error_type != self.error_type:
            return False
        if self.file_id is not None and (letter.file_id or "").lower() != self.file_id.lower():
            return False
        if self.owner is not None and letter.owner != self.owner:
            return False
        if self.older_than_s is not None:
            last = letter.last_failed_at
            return last is not None and now - last >= timedelta(seconds=self.older_than_s)
        return True


#: Every dead letter of every stage.
EVERYTHING = Selection()


@dataclass
class _Held:
    """One dead-letter queue held unacknowledged: taken head first, given back in order.

    ``depth`` is the queue's message count when it was opened; ``channel`` the channel it is
    held on (with publisher confirms for a replay or a purge).
    """

    queue: AbstractQueue
    depth: int
    channel: AbstractChannel
    timeout_s: float
    taken: list[AbstractIncomingMessage] = field(default_factory=list)

    async def take(self) -> AbstractIncomingMessage | None:
        """The next message (held until acked or given back), None when the queue is empty."""
        message = await self.queue.get(no_ack=False, fail=False, timeout=self.timeout_s)
        if message is not None:
            self.taken.append(message)
        return message

    async def give_back(self) -> None:
        """Take the rest of the queue, then requeue every message not acked, in order.

        Taking the rest first matters: a requeued message goes to the back of the queue, which
        is also its front only while nothing else is ready.
        """
        if all(message.processed for message in self.taken):
            return
        while await self.take() is not None:
            pass
        patient = True
        kept = [message for message in self.taken if not message.processed]
        for returned, message in enumerate(kept, start=1):
            await message.nack(requeue=True)
            if patient:
                # Requeues still unconfirmed are batched by the broker and a batch comes back
                # reversed: wait for this one before the next.
                patient = await self._wait_until_ready(returned)

    async def _wait_until_ready(self, count: int) -> bool:
        """Wait (at most ``_RETURN_WAIT_S``) until the queue has ``count`` ready messages.

        Re-declares through the queue object: a passive ``declare_queue`` on a robust channel
        answers from aio-pika's cache with the first declaration's counts. False on timeout
        (something else is consuming the queue).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RETURN_WAIT_S
        while True:
            result = await self.queue.declare(timeout=self.timeout_s)
            if int(result.message_count or 0) >= count:
                return True
            if loop.time() > deadline:
                log.warning("requeue not seen; giving back without waiting", queue=self.queue.name)
                return False
            await asyncio.sleep(0.001)


async def _passive_queue(channel: AbstractChannel, name: str) -> tuple[AbstractQueue, int]:
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise ConfigError(
            f"no queue {name}: is SLUICE_AMQP_PREFIX right, and has a service started?",
            queue=name,
        ) from None
    return queue, int(queue.declaration_result.message_count or 0)


@asynccontextmanager
async def holding(
    connection: AbstractRobustConnection,
    topology: Topology,
    stage: str,
    *,
    timeout_s: float,
    settings: AmqpSettings | None = None,
) -> AsyncIterator[_Held]:
    """``stage``'s dead-letter queue, held on a channel of its own (with publisher confirms
    when ``settings`` are given). On a normal exit the messages not acked are given back in
    order; on an error the channel's close gives them
    back (possibly in another order), and AMQP and socket errors become BrokerUnavailable."""
    name = topology.dead_letter_queue(stage)
    channel: AbstractChannel
    try:
        if settings is None:
            channel = await connection.channel(publisher_confirms=False)
        else:
            channel = await broker.open_channel(connection, settings)
    except _ERRORS as exc:
        raise BrokerUnavailable(f"no channel: {exc!r}", queue=name) from exc
    try:
        queue, depth = await _passive_queue(channel, name)
        held = _Held(queue, depth, channel, timeout_s)
        yield held
        await held.give_back()
    except _ERRORS as exc:
        raise BrokerUnavailable(f"dead-letter queue operation failed: {exc!r}", queue=name) from exc
    finally:
        if not channel.is_closed:
            try:
                await channel.close()
            except _ERRORS:
                pass  # the connection is gone: the broker requeues them all the same


async def existing_stages(
    connection: AbstractRobustConnection, topology: Topology, stages: Iterable[str]
) -> list[str]:
    """Those of ``stages`` whose dead-letter queue exists, in order (passive declares).

    A queue missing among others that exist is a stage no service of this version has declared
    yet (a broker still run by an older release, before the stage was added): it holds nothing,
    and is skipped with a warning. None existing is a configuration error.

    Raises:
        ConfigError: none of the queues exists (wrong ``SLUICE_AMQP_PREFIX``, or no service
            ever started); naming the first.
        BrokerUnavailable: the channel or connection failed.
    """
    chosen = list(stages)
    found: list[str] = []
    missing: list[str] = []
    try:
        channel = await connection.channel(publisher_confirms=False)
        try:
            for stage in chosen:
                try:
                    await channel.declare_queue(topology.dead_letter_queue(stage), passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    missing.append(stage)
                    channel = await connection.channel(publisher_confirms=False)  # closed by it
                else:
                    found.append(stage)
        finally:
            if not channel.is_closed:
                await channel.close()
    except _ERRORS as exc:
        raise BrokerUnavailable(f"no channel: {exc!r}") from exc
    if chosen and not found:
        name = topology.dead_letter_queue(chosen[0])
        raise ConfigError(
            f"no queue {name}: is SLUICE_AMQP_PREFIX right, and has a service started?",
            queue=name,
        )
    if missing:
        log.warning(
            "dead-letter queues missing, taken as empty: a service of this version declares "
            "them when it starts",
            queues=[topology.dead_letter_queue(stage) for stage in missing],
        )
    return found


async def _read(
    connection: AbstractRobustConnection, topology: Topology, stage: str, timeout_s: float
) -> list[AbstractIncomingMessage]:
    """Every message of ``stage``'s dead-letter queue, head first, given back in order."""
    async with holding(connection, topology, stage, timeout_s=timeout_s) as held:
        while await held.take() is not None:
            pass
        return list(held.taken)


async def list_dead_letters(
    connection: AbstractRobustConnection,
    topology: Topology,
    selection: Selection = EVERYTHING,
    *,
    timeout_s: float = 10.0,
) -> list[DeadLetter]:
    """The selected dead letters, stage by stage (in :data:`DEAD_LETTER_STAGES` order), each
    queue head first, leaving every queue as it was.

    Holds one whole queue unacknowledged at a time (dead letters are small events: bytes never
    travel through RabbitMQ). Each listing adds one to every message's ``x-delivery-count``
    (see the module docstring for the order guarantees).

    Raises:
        ConfigError: none of the selected dead-letter queues exists (wrong prefix, topology
            never declared); one missing among others is taken as empty
            (:func:`existing_stages`).
        BrokerUnavailable: the channel or connection failed; messages taken so far go back to
            the queue when the channel closes, possibly in another order.
    """
    now = datetime.now(UTC)
    letters = await every_letter(connection, topology, selection, timeout_s)
    return [letter for letter in letters if selection.matches(letter, now)]


async def every_letter(
    connection: AbstractRobustConnection,
    topology: Topology,
    selection: Selection,
    timeout_s: float,
) -> list[DeadLetter]:
    """Every dead letter of the selected stages, matching or not (:func:`list_dead_letters`)."""
    letters: list[DeadLetter] = []
    selected = (stage for stage in DEAD_LETTER_STAGES if stage in selection.stages)
    for stage in await existing_stages(connection, topology, selected):
        letters += [describe(m, stage) for m in await _read(connection, topology, stage, timeout_s)]
    return letters


async def show_dead_letter(
    connection: AbstractRobustConnection,
    topology: Topology,
    message_id: str,
    *,
    timeout_s: float = 10.0,
) -> DeadLetterDetail | None:
    """The whole dead letter whose ``message_id`` (the event id) is ``message_id``, from the
    first stage's dead-letter queue that holds it; None if none does. Leaves every queue as it
    was (as :func:`list_dead_letters`).

    Raises:
        ConfigError, BrokerUnavailable: as :func:`list_dead_letters`.
    """
    for stage in await existing_stages(connection, topology, DEAD_LETTER_STAGES):
        for message in await _read(connection, topology, stage, timeout_s):
            if message.message_id == message_id:
                return detail(message, stage)
    return None
