"""Wiring of the optional ocr consumer (``sluice worker ocr``, ``SLUICE_OCR_ENABLED``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Final

from services.ocr.handler import Deps, handle
from shared.adapters import tesseract
from shared.adapters.object_storage import open_object_storage
from shared.breaker import Dependency, DependencyName
from shared.errors import ConfigError, StorageUnavailable
from shared.settings import Settings
from shared.stage import Stage
from shared.transforms import bind_transform_queue

NAME: Final = "ocr"


async def build(settings: Settings) -> Stage:
    """Check Tesseract and its languages (``SLUICE_OCR_DEFAULT_LANG`` installed), bind the
    ocr queue to ``file.stored``, open the object store and return the ``ocr`` stage.

    Raises:
        ConfigError: ``SLUICE_OCR_ENABLED`` is not set, tesseract is missing, or the default
            languages are not installed.
        BrokerUnavailable: RabbitMQ unreachable.
    """
    if not settings.ocr.enabled:
        raise ConfigError("the ocr worker needs SLUICE_OCR_ENABLED=true")
    languages = tesseract.prepare(settings.ocr.default_lang)
    await bind_transform_queue(settings, NAME)
    stack = contextlib.AsyncExitStack()
    storage = await stack.enter_async_context(open_object_storage(settings))
    deps = Deps(
        storage=storage,
        settings=settings.ocr,
        languages=languages,
        readings=asyncio.Semaphore(settings.ocr.max_concurrent),
        search_max_chars=settings.text.search_max_chars,
        max_decode_pixels=settings.thumbnail.max_pixels,
    )
    return Stage(
        name=NAME,
        handle=functools.partial(handle, deps=deps),
        close=stack.aclose,
        dependencies=(Dependency(DependencyName.S3, (StorageUnavailable,), storage.ping),),
    )
