"""``GET /v1/files/{file_id}/events``: a file's progress as Server-Sent Events (seed 003: "each
step of the job updates its progress, which the front end reads").

The stream first sends the events already recorded in ``file_events``, in their order, then each
new one as the commit stage records it, and ends after ``file.committed`` (the final status,
``available`` or ``rejected``). One message per event (WHATWG HTML, "Server-sent events")::

    id: 3
    event: file.stored
    data: {"type": "file.stored", "version_number": 1, "occurred_at": "…", "recorded_at": "…",
           "detail": "stored: s3://…"}

``id`` is the event's number in the file's history (1, 2, 3, …, ``file_events.seq``); a client
that reconnects with ``Last-Event-ID: 3`` gets the events from 4 on, so none is sent twice and
none is missed. ``data`` has the shape of a row of ``history`` in ``GET /v1/files/{file_id}``.
A comment (``: ping``) is sent after ``SLUICE_STREAM_KEEPALIVE_S`` of silence.

``?version=N`` follows one version (an upload of a new version, ``POST …/versions`` or tus with
``file_id``): only the events of version ``N``, ending after its own ``file.committed`` (or
``file.deleted``); the ids are the same numbers, so ``Last-Event-ID`` works alike. Without it, a
file's stream ends after its first ``file.committed``, that of version 1.

Who may follow a file: its owner only. A file not recorded yet (the upload was accepted a moment
ago and the commit stage has not recorded ``file.received``) is waited for, up to
``SLUICE_STREAM_FIRST_EVENT_WAIT_S``, before the answer starts; it is streamed once its row
names the caller as owner. Past the wait, an unknown file and another owner's file are both 404
``not_found``, after the same wait, so neither the answer nor its time tells them apart.

Limits per process: ``SLUICE_STREAM_MAX_PER_OWNER`` open streams per owner (past it 429
``too_many_streams``) and ``SLUICE_STREAM_MAX_TOTAL`` in all (503 ``too_many_streams``), both
with ``Retry-After``. At shutdown every stream ends at once, so the gateway's graceful shutdown
does not wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from starlette.background import BackgroundTask

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.errors import RETRY_AFTER_S, ApiError
from services.gateway.files import not_found
from services.gateway.listener import HistoryListener, Subscription
from services.gateway.repo import committed_at_or_before, fetch_events_after, fetch_owner
from services.gateway.schemas import ErrorBody, StageEvent
from shared.errors import DatabaseUnavailable
from shared.events import FileDeleted
from shared.history import LAST_EVENT_TYPE
from shared.settings import Settings, StreamSettings
from shared.telemetry import metrics

log = structlog.get_logger("sluice.gateway")
router = APIRouter()
Deps = Annotated[GatewayDeps, Depends(get_deps)]
#: Longest pause between two looks at ``files`` while waiting for a file's first record (the
#: notice wakes the wait sooner; this covers a LISTEN connection being re-opened).
OWNER_RECHECK_S = 1.0
#: Longest a stream waits before reading again after PostgreSQL failed a read.
DATABASE_RETRY_S = 1.0


class StreamSlots:
    """Open streams per owner and in all (one event loop: nothing awaits between the check and
    the count)."""

    def __init__(self, per_owner: int, total: int) -> None:
        self.per_owner = per_owner
        self.total = total
        self._held: dict[str, int] = {}

    def open_count(self, owner: str | None = None) -> int:
        """Open streams of ``owner``, or of everyone."""
        return self._held.get(owner, 0) if owner else sum(self._held.values())

    def take(self, owner: str) -> Lease:
        """A slot of ``owner``'s, given back by :meth:`Lease.release` (once, however often it
        is called).

        Raises:
            ApiError: 429 ``too_many_streams`` (this owner's streams), 503 ``too_many_streams``
                (everyone's), both with ``Retry-After``.
        """
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if self.open_count() >= self.total:
            metrics.EVENT_STREAMS_REFUSED.labels("total").inc()
            raise ApiError(
                503,
                "too_many_streams",
                f"{self.total} event streams are open on this gateway, the most it serves; "
                "retry later",
                headers=retry,
            )
        held = self._held.get(owner, 0)
        if held >= self.per_owner:
            metrics.EVENT_STREAMS_REFUSED.labels("owner").inc()
            raise ApiError(
                429,
                "too_many_streams",
                f"{held} event streams of this owner are open, the most this gateway serves "
                "one owner; close one or retry later",
                headers=retry,
            )
        self._held[owner] = held + 1
        metrics.EVENT_STREAMS.inc()
        return Lease(self, owner)

    def _give_back(self, owner: str) -> None:
        metrics.EVENT_STREAMS.dec()
        left = self._held[owner] - 1
        if left:
            self._held[owner] = left
        else:
            del self._held[owner]


class Lease:
    """One open stream's slot."""

    def __init__(self, slots: StreamSlots, owner: str) -> None:
        self._slots = slots
        self._owner: str | None = owner

    def release(self) -> None:
        """Give the slot back (the first call only)."""
        if self._owner is not None:
            self._slots._give_back(self._owner)
            self._owner = None


@dataclass
class EventStreams:
    """The process's listener and stream slots; on ``app.state.streams`` while serving."""

    settings: StreamSettings
    listener: HistoryListener
    slots: StreamSlots


@contextlib.asynccontextmanager
async def open_streams(settings: Settings) -> AsyncIterator[EventStreams]:
    """Start the process's LISTEN connection (:class:`HistoryListener`) and its slots; on the
    way out end every stream and stop listening."""
    streams = EventStreams(
        settings=settings.stream,
        listener=HistoryListener(settings.database, settings.stream.keepalive_s),
        slots=StreamSlots(settings.stream.max_per_owner, settings.stream.max_total),
    )
    listening = asyncio.create_task(streams.listener.run(), name="history-listener")
    try:
        yield streams
    finally:
        streams.listener.close()
        await listening


def close_streams(app: FastAPI) -> None:
    """End every open stream of ``app`` now (before uvicorn's graceful shutdown, which waits
    for open responses)."""
    streams: EventStreams | None = getattr(app.state, "streams", None)
    if streams is not None:
        streams.listener.close()


def get_streams(request: Request) -> EventStreams:
    """The app's :class:`EventStreams` (a FastAPI dependency)."""
    streams: EventStreams = request.app.state.streams
    return streams


def parse_last_event_id(value: str | None) -> int:
    """The ``seq`` a client last received: ``Last-Event-ID`` as sent (absent or empty: 0).

    Raises:
        ApiError: 422 ``invalid_request`` for anything but a whole number from 0 to 2^31 - 1.
    """
    if value is None or not value.strip():
        return 0
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > 2**31 - 1:
        raise ApiError(
            422,
            "invalid_request",
            f"Last-Event-ID: {value[:40]!r} is not an event id of this stream (a whole number)",
        )
    return int(text)


def sse_message(row: Any) -> bytes:
    """One event of ``file_events`` as an SSE message: ``id`` its ``seq``, ``event`` its type,
    ``data`` a :class:`~services.gateway.schemas.StageEvent` in JSON."""
    body = StageEvent(
        type=row["type"],
        version_number=row["version_number"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        detail=row["detail"],
    )
    return format_sse_event(data_str=body.model_dump_json(), event=row["type"], id=str(row["seq"]))


async def wait_until_owned(
    pool: asyncpg.Pool,
    subscription: Subscription,
    owner: str,
    wait_s: float,
) -> None:
    """Return once ``subscription``'s file is recorded as ``owner``'s; wait up to ``wait_s``
    seconds for it to be recorded at all.

    Raises:
        ApiError: 404 ``not_found`` after ``wait_s`` seconds, whether the file is unknown or
            another owner's (the same answer after the same time).
        DatabaseUnavailable: PostgreSQL unreachable (answered 503).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        if await fetch_owner(pool, subscription.file_id) == owner:
            return
        left = deadline - loop.time()
        if left <= 0 or subscription.closing:
            raise not_found()
        await subscription.wait(min(left, OWNER_RECHECK_S))


async def event_stream(
    pool: asyncpg.Pool,
    subscription: Subscription,
    after_seq: int,
    keepalive_s: float,
    version: int | None = None,
) -> AsyncIterator[bytes]:
    """The SSE bytes of ``subscription``'s file: its events numbered past ``after_seq`` (of
    version ``version`` only, when given), as they are recorded, ending after ``file.committed``
    (of that version) or ``file.deleted``, or when the listener closes. A read that PostgreSQL
    fails is tried again (the stream stays open, with keep-alives)."""
    last = after_seq
    if last and await committed_at_or_before(pool, subscription.file_id, last, version):
        return
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    while True:
        retry_s = keepalive_s
        try:
            rows = await fetch_events_after(pool, subscription.file_id, last)
        except DatabaseUnavailable as exc:
            log.warning("gateway.stream_read_failed", error=str(exc))
            rows, retry_s = [], DATABASE_RETRY_S
        for row in rows:
            last = row["seq"]
            deleted = row["type"] == FileDeleted.routing_key  # the file's end, gdpr.md
            if version is not None and row["version_number"] != version and not deleted:
                continue
            yield sse_message(row)
            sent_at = loop.time()
            if row["type"] == LAST_EVENT_TYPE or deleted:
                return
        if subscription.closing:
            return
        if loop.time() - sent_at >= keepalive_s:
            yield KEEPALIVE_COMMENT
            sent_at = loop.time()
        # Woken by a notice (or the listener listening again), else at the next keep-alive:
        # either way the loop reads again, a safety net for a notice lost silently.
        await subscription.wait(min(retry_s, keepalive_s - (loop.time() - sent_at)))


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "Server-Sent Events: one per recorded event of the file, then the end.",
    },
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
    404: {"model": ErrorBody, "description": "Not this owner's file (or not recorded in time)."},
    422: {"model": ErrorBody, "description": "Last-Event-ID is not an id of this stream."},
    429: {"model": ErrorBody, "description": "This owner has too many streams open."},
    503: {"model": ErrorBody, "description": "Too many streams open on this gateway."},
}


@router.get(
    "/v1/files/{file_id}/events",
    response_class=StreamingResponse,
    responses=_RESPONSES,
    summary="Follow a file's progress (Server-Sent Events)",
)
async def follow_file(
    file_id: uuid.UUID,
    owner: Owner,
    deps: Deps,
    streams: Annotated[EventStreams, Depends(get_streams)],
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="The `id` of the last message received: resume after it.",
        ),
    ] = None,
    version: Annotated[
        int | None,
        Query(ge=1, description="Only this version's events, until its own file.committed."),
    ] = None,
) -> StreamingResponse:
    """The file's recorded events, then each new one, until ``file.committed`` (of
    ``version``, when given)."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    after = parse_last_event_id(last_event_id)
    lease = streams.slots.take(owner)
    subscription = streams.listener.subscribe(file_id)
    try:
        await wait_until_owned(deps.pool, subscription, owner, streams.settings.first_event_wait_s)
    except BaseException:
        _release(subscription, lease)
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in event_stream(
                deps.pool, subscription, after, streams.settings.keepalive_s, version
            ):
                yield chunk
        finally:
            _release(subscription, lease)

    async def cleanup() -> None:  # after the response, however it ended
        _release(subscription, lease)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(cleanup),
    )


def _release(subscription: Subscription, lease: Lease) -> None:
    """Give back a stream's subscription and slot (each once)."""
    subscription.close()
    lease.release()
