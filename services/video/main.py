"""Wiring of the optional video consumer (``sluice worker video``, ``SLUICE_VIDEO_ENABLED``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Final

from services.video.handler import Deps, handle
from shared.adapters import ffmpeg
from shared.adapters.object_storage import open_object_storage
from shared.breaker import Dependency, DependencyName
from shared.errors import ConfigError, StorageUnavailable
from shared.settings import Settings
from shared.stage import Stage
from shared.transforms import bind_transform_queue

NAME: Final = "video"


async def build(settings: Settings) -> Stage:
    """Check ffmpeg and ffprobe, bind the video queue to ``file.stored``, open the object store
    and return the ``video`` stage.

    Raises:
        ConfigError: ``SLUICE_VIDEO_ENABLED`` is not set, or ffmpeg/ffprobe are missing.
        BrokerUnavailable: RabbitMQ unreachable.
    """
    if not settings.video.enabled:
        raise ConfigError("the video worker needs SLUICE_VIDEO_ENABLED=true")
    ffmpeg.check_installed()
    await bind_transform_queue(settings, NAME)
    stack = contextlib.AsyncExitStack()
    storage = await stack.enter_async_context(open_object_storage(settings))
    deps = Deps(
        storage=storage,
        settings=settings.video,
        thumbnails=settings.thumbnail,
        slots=asyncio.Semaphore(settings.video.max_concurrent),
    )
    return Stage(
        name=NAME,
        handle=functools.partial(handle, deps=deps),
        close=stack.aclose,
        dependencies=(Dependency(DependencyName.S3, (StorageUnavailable,), storage.ping),),
    )
