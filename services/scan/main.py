"""Wiring of the scan consumer (``file.received``)."""

from __future__ import annotations

import contextlib
import functools

from services.scan.handler import Deps, handle
from shared.adapters import db
from shared.adapters.db import FileStateReader, create_pool
from shared.adapters.object_storage import open_object_storage
from shared.adapters.scanner import ClamdScanner
from shared.adapters.sources import SpoolOrS3SourceReader
from shared.adapters.spools import open_spools
from shared.breaker import Dependency, DependencyName
from shared.errors import DatabaseUnavailable, ScannerUnavailable, StorageUnavailable
from shared.policy import UploadPolicy
from shared.settings import Settings
from shared.stage import Stage


async def build(settings: Settings) -> Stage:
    """Open the spools (directory and quarantine bucket), S3 (for ``s3://`` sources) and a
    read-only view of file states (to recognise late redeliveries), and return the ``scan``
    stage, which applies the upload policy of ``SLUICE_GATEWAY_*`` (the gateway's) to every
    file.

    Nothing is contacted yet: clamd and S3 are reached per message. Their outages, and
    PostgreSQL's, open the stage's circuit breaker (probes: clamd ``PING``, ``SELECT 1``, S3
    ``HeadBucket``); a failure while they answer is retried by the run loop.
    """
    stack = contextlib.AsyncExitStack()
    storage = await stack.enter_async_context(open_object_storage(settings))
    spool = await stack.enter_async_context(open_spools(settings))
    pool = await create_pool(settings.database)
    stack.push_async_callback(pool.close)
    scanner = ClamdScanner(settings.clamd.host, settings.clamd.port, settings.clamd.timeout_s)
    deps = Deps(
        sources=SpoolOrS3SourceReader.for_settings(spool, storage, settings.s3),
        scanner=scanner,
        states=FileStateReader(pool),
        spool=spool,
        policy=UploadPolicy.from_settings(settings.gateway),
        storage=storage,
    )
    return Stage(
        name="scan",
        handle=functools.partial(handle, deps=deps),
        close=stack.aclose,
        dependencies=(
            Dependency(
                DependencyName.CLAMD,
                (ScannerUnavailable,),
                functools.partial(scanner.ping, settings.breaker.probe_timeout_s),
            ),
            Dependency(
                DependencyName.POSTGRESQL, (DatabaseUnavailable,), functools.partial(db.ping, pool)
            ),
            # StorageUnavailable covers the quarantine bucket's QuarantineUnavailable; the
            # quarantine bucket is on the same S3, whose HeadBucket of the final bucket answers.
            Dependency(DependencyName.S3, (StorageUnavailable,), storage.ping),
        ),
    )
