"""Wiring of the purge worker (``sluice worker purge``): the bucket, the fallback table, the
spools, and the handler."""

from __future__ import annotations

import contextlib
import functools
import uuid
from typing import Any

from services.purge.handler import Deps, handle
from shared.adapters.db import CONNECTION_ERRORS, create_pool, ping
from shared.adapters.object_storage import open_object_storage
from shared.adapters.spools import open_spools
from shared.breaker import Dependency, DependencyName
from shared.errors import DatabaseUnavailable, StorageUnavailable
from shared.settings import Settings
from shared.stage import Stage

NAME = "purge"


class FallbackRowsSql:
    """``fallback_blobs`` over an asyncpg pool: the purge's
    :class:`~services.purge.handler.FallbackRows`."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def delete_file(self, file_id: uuid.UUID, owner: str) -> int:
        """Delete every row of ``owner``'s file ``file_id``; how many there were.

        Raises:
            DatabaseUnavailable: PostgreSQL refused or lost the connection.
        """
        try:
            result: str = await self._pool.execute(
                "DELETE FROM fallback_blobs WHERE file_id = $1 AND owner = $2", file_id, owner
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL unavailable: {exc!r}", file_id=str(file_id)
            ) from exc
        return int(result.rsplit(" ", 1)[-1])


async def build(settings: Settings) -> Stage:
    """Open the object store (``SLUICE_STORAGE_BACKEND``), the spools and PostgreSQL; return the
    ``purge`` stage (consumes ``file.deleted``). An S3 or PostgreSQL outage opens its circuit
    breaker (probes: ``HeadBucket`` or the local root's check; ``SELECT 1``) rather than
    spending attempts.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    stack = contextlib.AsyncExitStack()
    storage = await stack.enter_async_context(open_object_storage(settings))
    spool = await stack.enter_async_context(open_spools(settings))
    pool = await create_pool(settings.database)
    stack.push_async_callback(pool.close)
    deps = Deps(storage=storage, fallback=FallbackRowsSql(pool), spool=spool)
    return Stage(
        name=NAME,
        handle=functools.partial(handle, deps=deps),
        close=stack.aclose,
        dependencies=(
            Dependency(DependencyName.S3, (StorageUnavailable,), storage.ping),
            Dependency(
                DependencyName.POSTGRESQL, (DatabaseUnavailable,), functools.partial(ping, pool)
            ),
        ),
    )
