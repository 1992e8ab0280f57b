"""Wiring of the thumbnail consumer (``sluice worker thumbnail``)."""

from __future__ import annotations

import asyncio
import functools

from services.thumbnail.handler import Deps, handle
from services.thumbnail.pool import RenderPool, cpu_count
from shared.adapters.storage import S3ObjectStorage
from shared.breaker import Dependency, DependencyName
from shared.errors import StorageUnavailable
from shared.settings import Settings
from shared.stage import Stage


async def build(settings: Settings) -> Stage:
    """Open S3, start the render processes (``SLUICE_THUMBNAIL_PROCESSES``, default one per
    core; 0: none, images are rendered in threads) and return the ``thumbnail`` stage
    (consumes ``file.stored``); images rendered at once: the larger of the processes and
    ``SLUICE_THUMBNAIL_MAX_CONCURRENT_RENDERS``. An S3 outage opens its circuit breaker
    (probe: ``HeadBucket``) rather than spending attempts."""
    storage = await S3ObjectStorage(settings.s3).__aenter__()
    processes = settings.thumbnail.processes
    if processes is None:
        processes = cpu_count()
    pool = (
        RenderPool(
            processes=processes,
            max_tasks_per_child=settings.thumbnail.max_tasks_per_child,
            max_crashes=settings.thumbnail.max_crashes,
            render_timeout_s=settings.thumbnail.render_timeout_s,
        )
        if processes
        else None  # 0: in threads of this process
    )
    deps = Deps(
        storage=storage,
        settings=settings.thumbnail,
        renders=asyncio.Semaphore(max(processes, settings.thumbnail.max_concurrent_renders)),
        pool=pool,
    )

    async def close() -> None:
        if pool is not None:
            await pool.close()
        await storage.__aexit__(None, None, None)

    return Stage(
        name="thumbnail",
        handle=functools.partial(handle, deps=deps),
        close=close,
        dependencies=(Dependency(DependencyName.S3, (StorageUnavailable,), storage.ping),),
    )
