"""What the ops routes call: the pipeline status and the dead-letter operations, in one place.

The routes (``services.gateway.ops_api``) use only the names below, shaped as
``shared.status`` (``collect_status``) and ``shared.deadletters`` (``Selection``,
``list_dead_letters``, ``show_dead_letter``, ``replay``, ``purge``) define them. This module
adapts the libraries available in this tree to those shapes:

- the status comes from passive queue declarations (ready messages and consumers of every
  stage queue and dead-letter queue); rates and handling times are ``None``;
- listing, showing and dry-running walk each selected dead-letter queue with
  :func:`shared.deadletters.list_dead_letters`, which leaves every queue as it was;
- a replay moves whole dead-letter queues (``shared.deadletters.replay``), so it refuses a
  selection narrower than whole stages and a rate; a purge is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from shared import deadletters
from shared.deadletters import DeadLetter
from shared.errors import SluiceError
from shared.settings import AmqpSettings, Settings
from shared.topology import FALLBACK, STAGES, WORKERS, Topology

__all__ = [
    "DeadLetter",
    "DeadLetterDetail",
    "NotSupported",
    "PipelineStatus",
    "PurgeResult",
    "ReplayResult",
    "Selection",
    "list_dead_letters",
    "pipeline_status",
    "purge",
    "replay",
    "show_dead_letter",
]


class NotSupported(SluiceError):
    """The dead-letter library here cannot do this operation (answered 501)."""


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operation applies to; every filter ``None`` = all of them."""

    stages: tuple[str, ...] = STAGES
    error_type: str | None = None
    older_than_s: float | None = None
    file_id: str | None = None

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
        """Whether ``letter`` passes every filter (its last failure time for ``older_than_s``)."""
        if letter.stage not in self.stages:
            return False
        if self.error_type is not None and letter.error_type != self.error_type:
            return False
        if self.file_id is not None and letter.file_id != self.file_id:
            return False
        if self.older_than_s is not None:
            when = letter.last_failed_at
            if when is None or (now - when).total_seconds() < self.older_than_s:
                return False
        return True

    @property
    def whole_stages(self) -> bool:
        """No filter but the stages."""
        return (self.error_type, self.older_than_s, self.file_id) == (None, None, None)


@dataclass(frozen=True)
class DeadLetterDetail:
    """One dead letter with its AMQP properties, headers, body and history (JSON-safe)."""

    letter: DeadLetter
    properties: dict[str, Any]
    headers: dict[str, Any]
    body: Any
    history: list[dict[str, Any]]


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
    """What a replay did (or, dry run, would do): counts are messages."""

    dry_run: bool
    depth_at_start: int
    examined: int
    replayed: int
    message_ids: tuple[str | None, ...]
    letters: tuple[LetterRef, ...] = ()


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed."""

    depth_at_start: int
    examined: int
    purged: int
    recorded: int
    message_ids: tuple[str | None, ...]
    letters: tuple[LetterRef, ...] = ()


@dataclass(frozen=True)
class PipelineStatus:
    """Per stage: queue depth, in flight, consumers, dead letters, rates and handling times."""

    collected_at: datetime
    stages: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """``{"collected_at": iso, "stages": [...], "problems": [...]}``."""
        return {
            "collected_at": self.collected_at.isoformat(),
            "stages": self.stages,
            "problems": self.problems,
        }


async def pipeline_status(
    settings: Settings, topology: Topology, connection: AbstractRobustConnection
) -> dict[str, Any]:
    """``PipelineStatus.as_json()`` of the pipeline under ``topology``.

    Raises:
        BrokerUnavailable: the broker did not answer.
    """
    return (await collect_status(settings, topology, (), connection=connection)).as_json()


async def collect_status(
    settings: Settings,
    topology: Topology,
    worker_urls: Sequence[str],
    *,
    connection: AbstractRobustConnection,
) -> PipelineStatus:
    """Ready messages and consumers of each stage queue and its dead-letter queue.

    Raises:
        BrokerUnavailable: the broker did not answer.
    """
    del settings, worker_urls
    channel = await connection.channel(publisher_confirms=False)
    try:
        stages = []
        for stage in WORKERS:
            queue = await channel.declare_queue(topology.queue(stage), passive=True)
            dead = 0
            if stage != FALLBACK:
                dlq = await channel.declare_queue(topology.dead_letter_queue(stage), passive=True)
                dead = int(dlq.declaration_result.message_count or 0)
            result = queue.declaration_result
            stages.append(
                {
                    "stage": stage,
                    "queue": topology.queue(stage),
                    "ready": int(result.message_count or 0),
                    "in_flight": None,
                    "consumers": int(result.consumer_count or 0),
                    "dead_letters": dead,
                    "rate_in_per_s": None,
                    "rate_out_per_s": None,
                    "p50_ms": None,
                    "p95_ms": None,
                }
            )
    finally:
        await channel.close()
    return PipelineStatus(collected_at=datetime.now(UTC), stages=stages)


async def list_dead_letters(
    connection: AbstractRobustConnection,
    topology: Topology,
    selection: Selection = Selection(),
    *,
    timeout_s: float = 10.0,
) -> list[DeadLetter]:
    """The dead letters ``selection`` matches, stage by stage, head first; queues unchanged.

    Raises:
        BrokerUnavailable: the broker failed during the listing.
    """
    now = datetime.now(UTC)
    letters: list[DeadLetter] = []
    for stage in selection.stages:
        listed = await deadletters.list_dead_letters(
            connection, topology, stage, timeout_s=timeout_s
        )
        letters += [letter for letter in listed if selection.matches(letter, now)]
    return letters


async def show_dead_letter(
    connection: AbstractRobustConnection, topology: Topology, message_id: str
) -> DeadLetterDetail | None:
    """The dead letter with ``message_id`` in any dead-letter queue, or ``None``.

    Raises:
        BrokerUnavailable: the broker failed during the search.
    """
    for letter in await list_dead_letters(connection, topology):
        if letter.message_id == message_id:
            failure = {
                "event": "failed",
                "stage": letter.stage,
                "error_type": letter.error_type,
                "error_message": letter.error_message,
                "at": letter.last_failed_at.isoformat() if letter.last_failed_at else None,
            }
            return DeadLetterDetail(letter, {}, {}, None, [failure])
    return None


async def replay(
    connection: AbstractRobustConnection,
    topology: Topology,
    selection: Selection = Selection(),
    *,
    settings: AmqpSettings,
    limit: int | None = None,
    rate_per_s: float | None = None,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Move the selected dead letters back to their stage queues (or, dry run, list them).

    Raises:
        NotSupported: a real replay of a selection narrower than whole stages, or with a rate.
        BrokerUnavailable: the broker failed; messages not yet moved stay dead-lettered.
    """
    if not dry_run and (not selection.whole_stages or rate_per_s is not None):
        raise NotSupported("replay here moves whole stages only, without a rate")
    if dry_run:
        letters = await list_dead_letters(connection, topology, selection)
        chosen = letters if limit is None else letters[:limit]
        return ReplayResult(
            dry_run=True,
            depth_at_start=len(letters),
            examined=len(letters),
            replayed=0,
            message_ids=tuple(letter.message_id for letter in chosen),
            letters=tuple(LetterRef.of(letter) for letter in chosen),
        )
    moved: list[str | None] = []
    depth = 0
    for stage in selection.stages:
        left = None if limit is None else limit - len(moved)
        if left == 0:
            break
        result = await deadletters.replay(
            connection, topology, stage, limit=left, settings=settings, on_progress=on_progress
        )
        depth += result.depth_at_start
        moved += result.message_ids
    return ReplayResult(
        dry_run=False,
        depth_at_start=depth,
        examined=len(moved),
        replayed=len(moved),
        message_ids=tuple(moved),
    )


async def purge(
    connection: AbstractRobustConnection,
    topology: Topology,
    selection: Selection,
    *,
    settings: AmqpSettings,
    reason: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> PurgeResult:
    """Remove the selected dead letters, recording each in its file's history.

    Raises:
        NotSupported: always here.
    """
    raise NotSupported("purging dead letters is not available in this version")
