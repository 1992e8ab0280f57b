"""What the ops routes call: the pipeline status and the dead-letter operations, in one place.

The routes (``services.gateway.ops_api``) use only the names below: the dead-letter
operations of ``shared.deadletters`` (``Selection``, ``list_dead_letters``,
``show_dead_letter``, ``replay``, ``purge``) and the status of ``shared.status``
(``collect_status``).
"""

from __future__ import annotations

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
from shared.status import collect_status, default_worker_urls
from shared.topology import Topology

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


async def pipeline_status(
    settings: Settings, topology: Topology, connection: AbstractRobustConnection
) -> dict[str, Any]:
    """``PipelineStatus.as_json()`` of the pipeline under ``topology``, from the RabbitMQ
    management API and the workers of ``SLUICE_STATUS_WORKER_URLS`` (``shared.status``).

    Never raises for an unreachable source (each is a line in ``problems``), but when the
    gateway's own broker connection is down the answer is a 503 before this is called.
    """
    del connection  # the collector opens what it needs itself
    status = await collect_status(settings, topology, default_worker_urls(settings))
    return status.as_json()
