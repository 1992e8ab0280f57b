"""``DELETE /v1/files/{id}``: an owner deletes one of its files (seed 000: GDPR deletion).

The commit stage stays the only writer of file state, and the file must read as gone at once.
So the route, for the caller's own file (404 otherwise, as for every read):

1. writes the gateway's tombstone (``file_deletions``: file id, owner, event id; no name):
   from then on every read route (status, list, content, event stream) answers 404, and the
   commit stage drops any event of the file that arrives (``services/commit/deletion.py``);
2. publishes ``file.deleted`` with a publisher confirm (or keeps it in the event outbox while
   RabbitMQ is away, as uploads do);
3. answers 202: the commit stage then records the deletion (status ``deleted``, the history
   reduced to that one event) and the purge worker removes every byte.

If the event can be neither confirmed nor kept, the tombstone is removed and the answer is 503:
nothing half-done stays. docs/gdpr.md.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends
from pydantic import Field

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.errors import unavailable
from services.gateway.files import not_found
from services.gateway.repo import db_call, fetch_file
from services.gateway.schemas import ErrorBody, _Body
from shared.errors import BrokerUnavailable, SluiceError
from shared.events import FileDeleted
from shared.telemetry import tracing

log = structlog.get_logger("sluice.gateway")
router = APIRouter()
Deps = Annotated[GatewayDeps, Depends(get_deps)]

#: Placeholders for a file whose current version has no row (only a notice was recorded):
#: the event needs its description fields; the purge needs none of them.
_NO_SHA256 = "0" * 64

_TOMBSTONE = """
INSERT INTO file_deletions (file_id, owner, event_id) VALUES ($1, $2, $3)
ON CONFLICT (file_id) DO NOTHING
"""


class DeletionAccepted(_Body):
    """202: the file reads as gone from now on; ``file.deleted`` is confirmed by RabbitMQ (or
    kept in the gateway's outbox), and its bytes are being purged."""

    file_id: uuid.UUID
    status: str = Field("deleted", description="Always `deleted`.")
    event_id: uuid.UUID = Field(description="The `file.deleted` event's id.")


def deletion_event(row: Any, file_id: uuid.UUID) -> FileDeleted:
    """The ``file.deleted`` of the file ``row`` (``services.gateway.repo.fetch_file``)."""
    return FileDeleted.of_file(
        {
            "file_id": file_id,
            "version_number": row["current_version"],
            "owner": row["owner"],
            "received_at": row["received_at"],
            "source": row["source"] or f"spool://{file_id}",
            "size_bytes": row["size_bytes"] or 0,
            "sha256": row["sha256"] or _NO_SHA256,
            "content_type": row["content_type"],
            "original_name": row["original_name"],
            "kind": row["kind"],
            "metadata": row["metadata"] or {},
        },
        reason="owner",
    )


async def announce(
    deps: GatewayDeps, event: FileDeleted, headers: MutableMapping[str, Any]
) -> None:
    """Publish ``event`` with a publisher confirm; when RabbitMQ is away (or older events wait
    in the outbox, which keeps their order), keep it in the outbox for the relay.

    Raises:
        OutboxFull, SpoolFull: it could be neither confirmed nor kept.
    """
    if deps.broker_connected() and deps.outbox.is_empty():
        try:
            await deps.publisher.publish(event, headers=headers)
            return
        except BrokerUnavailable as exc:
            log.warning("gateway.publish_failed", error=str(exc), event_id=str(event.event_id))
    await deps.outbox.put(event, headers)
    deps.relay.wake()


@router.delete(
    "/v1/files/{file_id}",
    status_code=202,
    response_model=DeletionAccepted,
    responses={
        401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
        404: {
            "model": ErrorBody,
            "description": "No such file for this owner, not yet recorded, or already deleted.",
        },
        503: {
            "model": ErrorBody,
            "description": "PostgreSQL unreachable, or RabbitMQ away and the outbox full or "
            "its disk full (nothing deleted; retry after `Retry-After`).",
        },
    },
    summary="Delete a file: every version, thumbnail and copy",
)
async def delete_file(file_id: uuid.UUID, owner: Owner, deps: Deps) -> DeletionAccepted:
    """Mark the caller's file deleted (404 from now on) and have every byte of it purged: the
    objects of every version, thumbnails, a fallback row, spool leftovers, and its history but
    the deletion itself (docs/gdpr.md)."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    row = await fetch_file(deps.pool, file_id, owner)
    if row is None:
        raise not_found()
    event = deletion_event(row, file_id)
    await db_call(lambda: deps.pool.execute(_TOMBSTONE, file_id, owner, event.event_id))
    try:
        with tracing.producer_span(
            deps.topology.exchange, event.routing_key, str(event.event_id)
        ) as span:
            span.set_attribute("sluice.file_id", str(file_id))
            headers = tracing.inject({})
            await announce(deps, event, headers)
    except SluiceError as exc:
        await db_call(
            lambda: deps.pool.execute("DELETE FROM file_deletions WHERE file_id = $1", file_id)
        )
        log.warning("gateway.delete_not_announced", error=str(exc))
        raise unavailable(exc) from exc
    log.info("gateway.file_deleted", event_id=str(event.event_id))
    return DeletionAccepted(file_id=file_id, event_id=event.event_id)
