"""Wiring of the store consumer (``file.scanned``)."""

from __future__ import annotations

import contextlib
import functools

from services.store.handler import Deps, handle
from shared.adapters.encryption import check_encryption
from shared.adapters.object_storage import open_object_storage
from shared.adapters.sources import SpoolOrS3SourceReader
from shared.adapters.spools import open_spools
from shared.breaker import Dependency, DependencyName
from shared.errors import QuarantineUnavailable, StorageUnavailable
from shared.settings import Settings
from shared.stage import Stage
from shared.topology import FALLBACK_ROUTE


async def build(settings: Settings) -> Stage:
    """Open the spools and the object store (``SLUICE_STORAGE_BACKEND``) and return the
    ``store`` stage.

    S3 is reached per message, not here: a store that starts while S3 is down retries, then
    dead-letters to the fallback worker (seed 000: S3 down → Base64 in the database). A file in
    the quarantine bucket (the S3 spool) is the exception: its bytes are in the S3 that is down,
    so there is nothing to keep in PostgreSQL. Its failure is
    :class:`~shared.errors.QuarantineUnavailable`, the stage's one circuit-breaker dependency
    (probe: ``HeadBucket``): its messages wait in the store queue until S3 answers again.
    """
    stack = contextlib.AsyncExitStack()
    storage = await stack.enter_async_context(
        open_object_storage(settings, stored_bytes_stage="store")
    )
    await check_encryption(storage)
    spool = await stack.enter_async_context(open_spools(settings))
    deps = Deps(
        sources=SpoolOrS3SourceReader.for_settings(spool, storage, settings.s3),
        storage=storage,
        multipart_threshold_bytes=settings.s3.multipart_threshold_bytes,
        spool=spool,
    )
    return Stage(
        name="store",
        handle=functools.partial(handle, deps=deps),
        close=stack.aclose,
        dead_letter_route=dead_letter_route,
        dependencies=(Dependency(DependencyName.S3, (QuarantineUnavailable,), storage.ping),),
    )


def dead_letter_route(exc: BaseException) -> str:
    """Where a store message goes once it is not retried: S3 unavailable → the fallback
    worker's queue (``FALLBACK_ROUTE``); anything else → the store dead-letter queue."""
    return FALLBACK_ROUTE if isinstance(exc, StorageUnavailable) else "store"
