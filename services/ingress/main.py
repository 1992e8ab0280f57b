"""Wiring of the ingress consumer (``<prefix>.ingress``: upstream services' ``file.received``)."""

from __future__ import annotations

import contextlib
import functools

from services.ingress.handler import Deps, handle
from shared.adapters import db
from shared.adapters.db import create_pool
from shared.adapters.upstreams import UpstreamRecords
from shared.adapters.versions import VersionNumbers
from shared.breaker import Dependency, DependencyName
from shared.errors import DatabaseUnavailable
from shared.settings import Settings
from shared.stage import Stage
from shared.text import visible_name


async def build(settings: Settings) -> Stage:
    """Open a PostgreSQL pool for the upstream registry and return the ``ingress`` stage.

    The largest file an upstream may announce is the upload policy's largest per-type limit
    (``SLUICE_GATEWAY_MAX_IMAGE_BYTES``, ``_MAX_PDF_BYTES``), its metadata
    ``SLUICE_GATEWAY_MAX_METADATA_BYTES``: the same as an upload's. A PostgreSQL outage opens the
    stage's circuit breaker (probe ``SELECT 1``).
    """
    stack = contextlib.AsyncExitStack()
    pool = await create_pool(settings.database)
    stack.push_async_callback(pool.close)
    gateway = settings.gateway
    deps = Deps(
        upstreams=UpstreamRecords(pool),
        own_bucket=settings.s3.bucket_name,
        upstream_buckets=frozenset(settings.s3.upstream_buckets),
        max_size_bytes=max(gateway.max_image_bytes, gateway.max_pdf_bytes, gateway.max_video_bytes),
        max_metadata_bytes=gateway.max_metadata_bytes,
        clean_name=visible_name,
        versions=VersionNumbers(pool),
    )
    return Stage(
        name="ingress",
        handle_with_publisher=functools.partial(handle, deps=deps),
        close=stack.aclose,
        dependencies=(
            Dependency(
                DependencyName.POSTGRESQL, (DatabaseUnavailable,), functools.partial(db.ping, pool)
            ),
        ),
    )
