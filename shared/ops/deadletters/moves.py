"""Moving dead letters out of their queues: :func:`replay` (back to the stage) and
:func:`purge` (for good, recorded in the file's history). How and why: ``shared.ops.deadletters``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from shared.adapters import broker
from shared.errors import BrokerUnavailable
from shared.ops.deadletters.messages import DeadLetter, describe, purge_record, replayed_message
from shared.ops.deadletters.queues import (
    EVERYTHING,
    Selection,
    every_letter,
    existing_stages,
    holding,
)
from shared.settings import AmqpSettings
from shared.topology import DEAD_LETTER_STAGES, Topology

log = structlog.get_logger("sluice.deadletters")


@dataclass(frozen=True)
class LetterRef:
    """A dead letter a replay or purge took (or, on a dry run, would take)."""

    message_id: str | None
    file_id: str | None
    stage: str
    event_type: str | None
    error_type: str | None

    @classmethod
    def of(cls, letter: DeadLetter) -> LetterRef:
        """The reference of ``letter``."""
        return cls(
            letter.message_id, letter.file_id, letter.stage, letter.event_type, letter.error_type
        )


@dataclass(frozen=True)
class ReplayResult:
    """What :func:`replay` did (or, ``dry_run``, would do); counts are messages.

    ``depth_at_start``: in the selected dead-letter queues when it started; ``examined``: taken
    and compared with the selection; ``replayed``: copied to their stage queue (confirmed) and
    acked from the dead-letter queue, 0 on a dry run; ``letters`` and ``message_ids``: those
    replayed (or that would be), in order.
    """

    dry_run: bool
    depth_at_start: int
    examined: int
    replayed: int
    message_ids: tuple[str | None, ...]
    letters: tuple[LetterRef, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PurgeResult:
    """What :func:`purge` did; counts are messages.

    ``purged``: acked away; ``recorded``: of them, with a ``file.dead_letter_purged`` published
    (confirmed) first; the others were not valid events (no file to record against) and were
    logged only.
    """

    depth_at_start: int
    examined: int
    purged: int
    recorded: int
    message_ids: tuple[str | None, ...]
    letters: tuple[LetterRef, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)


class _Pacer:
    """Spaces calls to :meth:`wait` at least ``1 / rate_per_s`` seconds apart (the first goes
    at once; None: no pacing), so ``n`` calls take at least ``(n - 1) / rate_per_s``."""

    def __init__(self, rate_per_s: float | None) -> None:
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        self._interval_s = 1.0 / rate_per_s if rate_per_s else 0.0
        self._next: float | None = None

    async def wait(self) -> None:
        if not self._interval_s:
            return
        loop = asyncio.get_running_loop()
        if self._next is not None and loop.time() < self._next:
            await asyncio.sleep(self._next - loop.time())
        self._next = max(loop.time(), self._next or 0.0) + self._interval_s


#: What a sweep does to a matching message: publish what it must (confirmed), then ack it.
_Act = Callable[[AbstractIncomingMessage, DeadLetter, broker.Publisher], Awaitable[None]]
#: ``on_progress(examined, depth_at_start, done)``: messages looked at, in the selected queues
#: at the start, and replayed (or purged) so far.
Progress = Callable[[int, int, int], None]


@dataclass
class _Sweep:
    """Takes the selected messages out of dead-letter queues, one at a time (replay, purge)."""

    connection: AbstractRobustConnection
    topology: Topology
    selection: Selection
    settings: AmqpSettings
    limit: int | None
    on_progress: Progress | None
    depth_at_start: int = 0
    examined: int = 0
    done: list[DeadLetter] = field(default_factory=list)

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.examined, self.depth_at_start, len(self.done))

    async def run(self, act: _Act, what: str) -> None:
        """Apply ``act`` to each selected message, stage by stage, head first.

        Raises:
            ConfigError: none of the selected dead-letter queues exists (one missing among
                others is taken as empty: :func:`existing_stages`).
            BrokerUnavailable: a publish was not confirmed or the connection failed; messages
                done so far stay done, the others stay in their dead-letter queue.
        """
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be >= 0")
        selected = (stage for stage in DEAD_LETTER_STAGES if stage in self.selection.stages)
        stages = await existing_stages(self.connection, self.topology, selected)
        depths = {}
        for stage in stages:
            async with holding(self.connection, self.topology, stage, timeout_s=1) as held:
                depths[stage] = held.depth
        self.depth_at_start = sum(depths.values())
        self._report()
        now = datetime.now(UTC)
        try:
            for stage in stages:
                await self._stage(stage, depths[stage], act, now)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(
                f"{what} stopped after {len(self.done)} message(s): {exc.message}", **exc.context
            ) from exc

    async def _stage(self, stage: str, depth: int, act: _Act, now: datetime) -> None:
        async with holding(
            self.connection,
            self.topology,
            stage,
            timeout_s=self.settings.publish_timeout_s,
            settings=self.settings,
        ) as held:
            events = await held.channel.get_exchange(self.topology.exchange, ensure=False)
            publisher = broker.Publisher(held.channel, events, self.settings.publish_timeout_s)
            seen = 0
            while seen < depth and not self._full():
                message = await held.take()
                if message is None:
                    break
                seen += 1
                self.examined += 1
                letter = describe(message, stage)
                if self.selection.matches(letter, now):
                    await act(message, letter, publisher)
                    self.done.append(letter)
                self._report()

    def _full(self) -> bool:
        return self.limit is not None and len(self.done) >= self.limit


async def replay(
    connection: AbstractRobustConnection,
    topology: Topology,
    selection: Selection = EVERYTHING,
    *,
    settings: AmqpSettings,
    limit: int | None = None,
    rate_per_s: float | None = None,
    dry_run: bool = False,
    on_progress: Progress | None = None,
) -> ReplayResult:
    """Move the selected dead letters back to their stage's work queue, head first.

    Each goes to ``<prefix>.<stage>`` through the default exchange, attempts reset and marked
    as replayed (``shared.ops.deadletters.messages.replayed_message``), and is acked from the
    dead-letter queue only after the publisher confirm. Messages that do not match stay in
    their queue in their order. At most ``limit`` messages are replayed, at most
    ``rate_per_s`` a second; a queue is looked at no further than the depth it had at the
    start (messages failing again meanwhile are not replayed again). ``dry_run`` lists what
    would move (:func:`list_dead_letters`) and moves nothing. ``on_progress(examined,
    depth_at_start, replayed)`` is called before the first message and after each one.

    Raises:
        ValueError: ``limit`` < 0 or ``rate_per_s`` <= 0.
        ConfigError: a dead-letter queue does not exist.
        BrokerUnavailable: a publish was not confirmed or the connection failed; the message
            being moved stays in the dead-letter queue (and, if it was confirmed but not yet
            acked, also in the stage queue). Messages already replayed stay replayed.
    """
    pacer = _Pacer(rate_per_s)
    if dry_run:
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        now = datetime.now(UTC)
        letters = await every_letter(connection, topology, selection, settings.publish_timeout_s)
        matching = [letter for letter in letters if selection.matches(letter, now)]
        chosen = matching if limit is None else matching[:limit]
        return ReplayResult(
            dry_run=True,
            depth_at_start=len(letters),
            examined=len(letters),
            replayed=0,
            message_ids=tuple(letter.message_id for letter in chosen),
            letters=tuple(LetterRef.of(letter) for letter in chosen),
        )

    async def move(
        message: AbstractIncomingMessage, letter: DeadLetter, publisher: broker.Publisher
    ) -> None:
        await pacer.wait()
        copy = replayed_message(message, letter, datetime.now(UTC), settings.user)
        await publisher.publish_to_queue(topology.queue(letter.stage), copy)
        await message.ack()

    sweep = _Sweep(connection, topology, selection, settings, limit, on_progress)
    await sweep.run(move, "replay")
    return ReplayResult(
        dry_run=False,
        depth_at_start=sweep.depth_at_start,
        examined=sweep.examined,
        replayed=len(sweep.done),
        message_ids=tuple(letter.message_id for letter in sweep.done),
        letters=tuple(LetterRef.of(letter) for letter in sweep.done),
    )


async def purge(
    connection: AbstractRobustConnection,
    topology: Topology,
    selection: Selection,
    *,
    settings: AmqpSettings,
    reason: str,
    on_progress: Progress | None = None,
) -> PurgeResult:
    """Remove the selected dead letters for good, each recorded in its file's history first.

    For each, a ``file.dead_letter_purged`` (stage, the dead letter's event id and type, its
    error, ``reason``) is published with a publisher confirm, then the message is acked; the
    commit stage records it without moving the file's status. A message that is not a valid
    event is acked with a log line only. Non-matching messages stay in their order.
    ``on_progress`` as for :func:`replay`.

    Raises:
        ValueError: ``reason`` is empty.
        ConfigError, BrokerUnavailable: as :func:`replay`; a message whose record was not
            confirmed stays in its dead-letter queue.
    """
    if not reason.strip():
        raise ValueError("a purge needs a reason")
    recorded: list[str | None] = []

    async def remove(
        message: AbstractIncomingMessage, letter: DeadLetter, publisher: broker.Publisher
    ) -> None:
        record = purge_record(message, letter, reason)
        if record is None:
            log.warning(
                "purging a dead letter that is not a valid event; nothing to record",
                stage=letter.stage,
                message_id=letter.message_id,
                error_type=letter.error_type,
                reason=reason,
            )
        else:
            await publisher.publish(record)
            recorded.append(letter.message_id)
        await message.ack()
        log.info(
            "dead letter purged",
            stage=letter.stage,
            message_id=letter.message_id,
            file_id=letter.file_id,
            reason=reason,
        )

    sweep = _Sweep(connection, topology, selection, settings, None, on_progress)
    await sweep.run(remove, "purge")
    return PurgeResult(
        depth_at_start=sweep.depth_at_start,
        examined=sweep.examined,
        purged=len(sweep.done),
        recorded=len(recorded),
        message_ids=tuple(letter.message_id for letter in sweep.done),
        letters=tuple(LetterRef.of(letter) for letter in sweep.done),
    )
