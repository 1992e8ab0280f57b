"""Wiring of the thumbnail consumer (``sluice worker thumbnail``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from services.thumbnail.handler import Deps, handle
from shared.adapters.object_storage import open_object_storage
from shared.breaker import Dependency, DependencyName
from shared.errors import StorageUnavailable
from shared.imaging.pool import RenderPool, cpu_count
from shared.memory import pin_mmap_threshold
from shared.settings import Settings
from shared.stage import Stage


async def build(settings: Settings) -> Stage:
    """Open the object store (``SLUICE_STORAGE_BACKEND``), start the render processes
    (``SLUICE_THUMBNAIL_PROCESSES``, default one per core; 0: none, images are rendered in
    threads) and return the ``thumbnail`` stage (consumes ``file.stored``); images rendered at
    once: the larger of the processes and ``SLUICE_THUMBNAIL_MAX_CONCURRENT_RENDERS``. An
    outage of the store opens its circuit breaker (probe: S3 ``HeadBucket``, or the local
    root's check) rather than spending attempts."""
    pin_mmap_threshold()  # each image's bytes pass through here: keep them off the heap
    stack = contextlib.AsyncExitStack()
    storage = await stack.enter_async_context(open_object_storage(settings))
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
        await stack.aclose()

    return Stage(
        name="thumbnail",
        handle=functools.partial(handle, deps=deps),
        close=close,
        dependencies=(Dependency(DependencyName.S3, (StorageUnavailable,), storage.ping),),
    )
