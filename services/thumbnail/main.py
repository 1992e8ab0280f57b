"""Wiring of the thumbnail consumer (``sluice worker thumbnail``)."""

from __future__ import annotations

import asyncio
import functools

from services.thumbnail.handler import Deps, handle
from shared.adapters.storage import S3ObjectStorage
from shared.breaker import Dependency, DependencyName
from shared.errors import StorageUnavailable
from shared.settings import Settings
from shared.stage import Stage


async def build(settings: Settings) -> Stage:
    """Open S3 and return the ``thumbnail`` stage (consumes ``file.stored``). An S3 outage
    opens its circuit breaker (probe: ``HeadBucket``) rather than spending attempts."""
    storage = await S3ObjectStorage(settings.s3).__aenter__()
    deps = Deps(
        storage=storage,
        settings=settings.thumbnail,
        renders=asyncio.Semaphore(settings.thumbnail.max_concurrent_renders),
    )

    async def close() -> None:
        await storage.__aexit__(None, None, None)

    return Stage(
        name="thumbnail",
        handle=functools.partial(handle, deps=deps),
        close=close,
        dependencies=(Dependency(DependencyName.S3, (StorageUnavailable,), storage.ping),),
    )
