"""Wiring of the commit stage: a PostgreSQL pool, the spool, and the handler."""

from __future__ import annotations

import functools

from services.commit.handler import Deps, handle
from services.commit.repository import FileRepository
from shared.adapters.db import create_pool, ping
from shared.adapters.spool import LocalSpool
from shared.breaker import Dependency, DependencyName
from shared.errors import DatabaseUnavailable
from shared.settings import Settings
from shared.stage import Stage

NAME = "commit"


async def build(settings: Settings) -> Stage:
    """Open the commit stage's resources and return it, ready for :class:`StageConsumer`.

    The stage takes every event type its queue is bound to
    (:func:`shared.topology.accepted_event_types`); ``close`` closes the pool. A PostgreSQL
    outage opens the stage's circuit breaker (probe: ``SELECT 1``) rather than spending
    attempts.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    pool = await create_pool(settings.database)
    repository = FileRepository(pool)
    deps = Deps(
        repository=repository, spool=LocalSpool(settings.spool.dir, settings.spool.chunk_bytes)
    )
    return Stage(
        name=NAME,
        handle=functools.partial(handle, deps=deps),
        close=repository.close,
        dependencies=(
            Dependency(
                DependencyName.POSTGRESQL, (DatabaseUnavailable,), functools.partial(ping, pool)
            ),
        ),
    )
