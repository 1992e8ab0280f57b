"""Wiring of the commit stage: a PostgreSQL pool, the spools (directory and quarantine bucket),
and the handler."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import structlog

from services.commit.handler import Deps, handle
from services.commit.repository import FileRepository
from shared.adapters.db import create_pool, ping
from shared.adapters.spools import open_spools
from shared.breaker import Dependency, DependencyName
from shared.errors import DatabaseUnavailable
from shared.settings import Settings
from shared.stage import Stage
from shared.telemetry import metrics

NAME = "commit"
#: Seconds between two counts of stuck files (the ``sluice_files_stuck`` gauge).
STUCK_INTERVAL_S = 60.0
log = structlog.get_logger("sluice.commit")


async def build(settings: Settings) -> Stage:
    """Open the commit stage's resources and return it, ready for :class:`StageConsumer`.

    The stage takes every event type its queue is bound to
    (:func:`shared.topology.accepted_event_types`); ``close`` closes the pool. A PostgreSQL
    outage opens the stage's circuit breaker (probe: ``SELECT 1``) rather than spending
    attempts.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    stack = contextlib.AsyncExitStack()
    spool = await stack.enter_async_context(open_spools(settings))
    pool = await create_pool(settings.database)
    repository = FileRepository(pool)
    stack.push_async_callback(repository.close)
    deps = Deps(repository=repository, spool=spool, bucket=settings.s3.bucket_name)
    return Stage(
        name=NAME,
        handle=functools.partial(handle, deps=deps),
        close=stack.aclose,
        background=functools.partial(
            publish_stuck, repository, settings.status.stuck_after_s, STUCK_INTERVAL_S
        ),
        dependencies=(
            Dependency(
                DependencyName.POSTGRESQL, (DatabaseUnavailable,), functools.partial(ping, pool)
            ),
        ),
    )


async def publish_stuck(
    repository: FileRepository, older_than_s: float, interval_s: float, stop: asyncio.Event
) -> None:
    """Every ``interval_s`` seconds until ``stop``, set the ``sluice_files_stuck`` gauge from
    :meth:`FileRepository.count_stuck`; a PostgreSQL outage skips a round (logged)."""
    while not stop.is_set():
        try:
            attention, late = await repository.count_stuck(older_than_s)
        except DatabaseUnavailable as exc:
            log.warning("stuck files not counted", error=str(exc))
        else:
            metrics.FILES_STUCK.labels(attention="yes").set(attention)
            metrics.FILES_STUCK.labels(attention="no").set(late)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
