"""What the ops routes call: the pipeline status and the dead-letter operations, in one place.

The routes (``services.gateway.ops_api``) use only the names below. The dead-letter
operations are ``shared.deadletters``' own (``Selection``, ``list_dead_letters``,
``show_dead_letter``, ``replay``, ``purge``). The status is read from passive queue
declarations: ready messages and consumers of every stage queue, and the depth of its
dead-letter queue; rates, messages in flight and handling times are ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from shared.deadletters import (
    DeadLetter,
    DeadLetterDetail,
    PurgeResult,
    ReplayResult,
    Selection,
    list_dead_letters,
    purge,
    replay,
    show_dead_letter,
)
from shared.settings import Settings
from shared.topology import FALLBACK, WORKERS, Topology

__all__ = [
    "DeadLetter",
    "DeadLetterDetail",
    "PurgeResult",
    "ReplayResult",
    "Selection",
    "list_dead_letters",
    "pipeline_status",
    "purge",
    "replay",
    "show_dead_letter",
]


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
    """``PipelineStatus.as_json()`` of the pipeline under ``topology`` (shape: contracts of
    ``shared.status``).

    Raises:
        aiormq.exceptions.AMQPError, ConnectionError: the broker did not answer.
    """
    del settings
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
    return PipelineStatus(collected_at=datetime.now(UTC), stages=stages).as_json()
