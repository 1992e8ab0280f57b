"""Wiring of the store consumer (``file.scanned``)."""

from __future__ import annotations

import contextlib
import functools

from services.store.handler import Deps, handle
from shared.adapters.sources import SpoolOrS3SourceReader
from shared.adapters.spool import LocalSpool
from shared.adapters.storage import S3ObjectStorage
from shared.errors import StorageUnavailable
from shared.settings import Settings
from shared.stage import Stage
from shared.topology import FALLBACK_ROUTE


async def build(settings: Settings) -> Stage:
    """Open the spool and S3 and return the ``store`` stage.

    S3 is reached per message, not here: a store that starts while S3 is down retries, then
    dead-letters to the fallback worker. So the stage declares no circuit-breaker dependency:
    its S3 outages take that path (seed 000: S3 down → Base64 in the database).
    """
    stack = contextlib.AsyncExitStack()
    storage = await stack.enter_async_context(
        S3ObjectStorage(settings.s3, stored_bytes_stage="store")
    )
    spool = LocalSpool(settings.spool.dir, settings.spool.chunk_bytes)
    deps = Deps(
        sources=SpoolOrS3SourceReader.for_settings(spool, storage, settings.s3),
        storage=storage,
        multipart_threshold_bytes=settings.s3.multipart_threshold_bytes,
    )
    return Stage(
        name="store",
        handle=functools.partial(handle, deps=deps),
        close=stack.aclose,
        dead_letter_route=dead_letter_route,
    )


def dead_letter_route(exc: BaseException) -> str:
    """Where a store message goes once it is not retried: S3 unavailable → the fallback
    worker's queue (``FALLBACK_ROUTE``); anything else → the store dead-letter queue."""
    return FALLBACK_ROUTE if isinstance(exc, StorageUnavailable) else "store"
