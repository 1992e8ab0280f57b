"""The gateway's rendition maker: cache in object storage, render once, bound the work.

A rendition of a stored version lives beside its original, at
:func:`shared.naming.rendition_key` (``{original key}.render-{w}x{h}-{fit}.{format}``), written
with its SHA-256 (``put_bytes``: the store verifies it, so an object is there whole or not at
all; S3 ``x-amz-checksum-sha256``, the local backend's temporary file then rename). The purge of
``{owner}/{file_id}-`` removes renditions with the file.

- **Render once.** Requests for one key share an :class:`asyncio.Lock` in this process: the
  first renders and stores, the others find the object once the lock is theirs. The lock is
  per process; N gateway processes may render the same rendition up to N times, each writing
  the same bytes to the same key.
- **Bounds.** At most ``SLUICE_RENDER_MAX_CONCURRENT`` renders per gateway process and
  ``SLUICE_RENDER_MAX_CONCURRENT_PER_OWNER`` per owner; past either, 429 ``too_many_renders``
  with ``Retry-After``. Cache hits take neither.
- **Where.** In ``SLUICE_RENDER_PROCESSES`` child processes (:class:`~shared.imaging.pool.
  RenderPool`: a decoder crash or hang kills a child, not the gateway), or in threads when 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from services.gateway.errors import RETRY_AFTER_S, ApiError
from services.gateway.slots import OwnerSlots
from shared.imaging.pool import RenderPool
from shared.imaging.rendition import Fit, Format, Rendition, render_rendition
from shared.ports import ObjectStore
from shared.settings import RenderSettings, ThumbnailSettings

__all__ = ["RENDERS", "RENDITION_CACHE", "RenditionRequest", "Renditions"]

RENDERS = Counter(
    "sluice_renditions_rendered_total",
    "Renditions rendered by the gateway (cache misses that rendered), by format and outcome "
    "(ok, or error: the image could not be decoded).",
    ["format", "outcome"],
)
RENDITION_CACHE = Counter(
    "sluice_rendition_cache_total",
    "Rendition requests by cache result: hit (served from object storage), miss (rendered "
    "and stored), or bypass (rendered from the PostgreSQL fallback, not stored).",
    ["result"],
)
RENDER_SECONDS = Histogram(
    "sluice_rendition_render_seconds",
    "Wall time of one rendition's render (decode, resize, encode), seconds.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

#: Bumped when the renderer's output changes, so ETags and cached objects change with it.
RENDERER_REVISION = "1"


@dataclass(frozen=True)
class RenditionRequest:
    """What to make: ``width``/``height`` in pixels (one may be ``None``), a fit and a format."""

    width: int | None
    height: int | None
    fit: Fit
    format: Format

    def etag(self, source_sha256: str) -> str:
        """A strong validator (RFC 9110 § 8.8.3): the source version's SHA-256, the parameters
        and the renderer revision, hashed; quoted."""
        text = f"{source_sha256}:{self.width}x{self.height}:{self.fit}:{self.format}"
        digest = hashlib.sha256(f"{text}:{RENDERER_REVISION}".encode()).hexdigest()
        return f'"r{RENDERER_REVISION}-{digest[:40]}"'


class Renditions:
    """Renders renditions for the gateway; built by the app's lifespan, closed at shutdown."""

    def __init__(self, settings: RenderSettings, thumbnail: ThumbnailSettings) -> None:
        self.settings = settings
        self._options: dict[str, Any] = {
            "max_pixels": thumbnail.max_pixels,
            "webp_quality": thumbnail.webp_quality,
            "jpeg_quality": thumbnail.jpeg_quality,
        }
        self._pool = (
            RenderPool(
                processes=settings.processes,
                max_tasks_per_child=thumbnail.max_tasks_per_child,
                max_crashes=thumbnail.max_crashes,
                render_timeout_s=settings.timeout_s,
            )
            if settings.processes
            else None
        )
        self._owners = OwnerSlots(settings.max_concurrent_per_owner, what="renders")
        self._running = 0
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, key: str) -> asyncio.Lock:
        """The lock of one rendition key in this process (dropped once nobody holds it)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    @contextlib.contextmanager
    def slot(self, owner: str) -> Iterator[None]:
        """One render of ``owner`` for the duration of the block (fetching the source,
        rendering, storing).

        Raises:
            ApiError: 429 ``too_many_renders`` (``Retry-After``) past the process's or the
                owner's bound.
        """
        if self._running >= self.settings.max_concurrent:
            raise ApiError(
                429,
                "too_many_renders",
                f"{self._running} renditions are being rendered, the most this gateway "
                "renders at once; retry in a moment",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        with self._owners.hold(owner):
            self._running += 1
            try:
                yield
            finally:
                self._running -= 1

    async def render(
        self, source: bytes, content_type: str, request: RenditionRequest
    ) -> Rendition:
        """``source`` (an image of ``content_type``) rendered as ``request`` says.

        Raises:
            ThumbnailError: the image cannot be decoded (corrupt, bomb, decoder crash or
                timeout: :func:`~shared.imaging.rendition.render_rendition`).
        """
        started = time.perf_counter()
        try:
            rendition = await self._render(source, content_type, request)
        except Exception:
            RENDERS.labels(request.format, "error").inc()
            raise
        RENDER_SECONDS.observe(time.perf_counter() - started)
        RENDERS.labels(request.format, "ok").inc()
        return rendition

    @staticmethod
    async def store(
        storage: ObjectStore, key: str, rendition: Rendition, source_sha256: str
    ) -> None:
        """Write ``rendition`` at ``key`` with its SHA-256, verified by the store (whole or
        not at all).

        Raises:
            StorageUnavailable: storage down. ChecksumMismatch: the bytes arrived damaged.
        """
        await storage.put_bytes(
            key,
            rendition.data,
            sha256_hex=hashlib.sha256(rendition.data).hexdigest(),
            content_type=rendition.content_type,
            metadata={
                "source-sha256": source_sha256,
                "width": str(rendition.width),
                "height": str(rendition.height),
            },
        )

    async def _render(
        self, source: bytes, content_type: str, request: RenditionRequest
    ) -> Rendition:
        options = {
            **self._options,
            "width": request.width,
            "height": request.height,
            "fit": request.fit,
            "format": request.format,
        }
        if self._pool is None:
            return await asyncio.to_thread(render_rendition, source, content_type, **options)
        return await self._pool.run(render_rendition, source, content_type, **options)

    async def close(self) -> None:
        """Stop the render processes (renders in flight finish first)."""
        if self._pool is not None:
            await self._pool.close()
