"""Wiring of the optional pdftext consumer (``sluice worker pdftext``,
``SLUICE_PDFTEXT_ENABLED``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Final

from services.pdftext.handler import Deps, handle
from shared.adapters import tesseract
from shared.adapters.object_storage import open_object_storage
from shared.breaker import Dependency, DependencyName
from shared.errors import ConfigError, StorageUnavailable
from shared.settings import Settings
from shared.stage import Stage
from shared.transforms import bind_transform_queue

NAME: Final = "pdftext"


async def build(settings: Settings) -> Stage:
    """Check Tesseract (pages without a text layer are OCR'd), bind the pdftext queue to
    ``file.stored``, open the object store and return the ``pdftext`` stage.

    Raises:
        ConfigError: ``SLUICE_PDFTEXT_ENABLED`` is not set, tesseract is missing, or
            ``SLUICE_OCR_DEFAULT_LANG`` is not installed.
        BrokerUnavailable: RabbitMQ unreachable.
    """
    if not settings.pdftext.enabled:
        raise ConfigError("the pdftext worker needs SLUICE_PDFTEXT_ENABLED=true")
    languages = tesseract.prepare(settings.ocr.default_lang)
    await bind_transform_queue(settings, NAME)
    stack = contextlib.AsyncExitStack()
    storage = await stack.enter_async_context(open_object_storage(settings))
    deps = Deps(
        storage=storage,
        settings=settings.pdftext,
        ocr=settings.ocr,
        languages=languages,
        pdfium=asyncio.Lock(),
        search_max_chars=settings.text.search_max_chars,
    )
    return Stage(
        name=NAME,
        handle=functools.partial(handle, deps=deps),
        close=stack.aclose,
        dependencies=(Dependency(DependencyName.S3, (StorageUnavailable,), storage.ping),),
    )
