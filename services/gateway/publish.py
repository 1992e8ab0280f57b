"""Announcing a spooled file: ``file.received`` made safe, the same way for every route that
takes uploads (``POST /v1/files``, the completion of a tus upload).

The event is published with ``mandatory`` set and a publisher confirm; when the broker is not
connected, does not confirm, or older events wait in the outbox, it is written durably to the
event outbox (:mod:`shared.adapters.outbox`) for the relay instead. Only an outbox at its bound
(503 ``outbox_full``) or a full disk (507) refuses the file, whose spooled bytes are then
removed (a ``.abandoned`` tombstone stays, in case the broker took the event after all).

The event is published from a PRODUCER span whose W3C ``traceparent`` it carries, through the
outbox too: the file's trace starts here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from services.gateway.deps import GatewayDeps
from services.gateway.errors import insufficient_storage, unavailable
from shared.errors import BrokerUnavailable, OutboxFull, SpoolFull, StorageUnavailable
from shared.events import FileReceived
from shared.telemetry import metrics, tracing

log = structlog.get_logger("sluice.gateway")


async def announce(deps: GatewayDeps, event: FileReceived) -> bool:
    """Make ``event`` safe: confirmed by RabbitMQ, else kept in the outbox. ``True`` when it
    was confirmed, ``False`` when it waits in the outbox.

    Raises:
        ApiError: 503 ``outbox_full`` or 507 ``insufficient_storage`` (:func:`keep_in_outbox`);
            the spooled bytes are gone then.
    """
    with tracing.producer_span(
        deps.topology.exchange, event.routing_key, str(event.event_id)
    ) as span:
        span.set_attribute("sluice.file_id", str(event.file_id))
        headers = tracing.inject({})
        if await publish_now(deps, event, headers):
            return True
        span.set_attribute("sluice.outbox", True)
        await keep_in_outbox(deps, event, headers)
        return False


async def publish_now(deps: GatewayDeps, event: FileReceived, headers: Mapping[str, Any]) -> bool:
    """Publish ``event`` with a confirm; ``False`` if it must wait in the outbox instead (the
    broker is not connected, it did not confirm, or older events wait there)."""
    if not deps.broker_connected() or not deps.outbox.is_empty():
        return False
    try:
        await deps.publisher.publish(event, headers=headers)
    except BrokerUnavailable as exc:
        log.warning("gateway.publish_failed", error=str(exc), event_id=str(event.event_id))
        return False
    return True


async def keep_in_outbox(
    deps: GatewayDeps, event: FileReceived, headers: Mapping[str, Any]
) -> None:
    """Write ``event`` to the outbox for the relay.

    Raises:
        ApiError: 503 ``outbox_full`` (bytes removed, tombstone left) when the outbox is at its
            bound; 507 ``insufficient_storage`` (bytes removed) when the disk cannot take it.
    """
    try:
        await deps.outbox.put(event, headers)
    except SpoolFull as exc:
        # The disk that holds the outbox holds the bytes too: free them. The tombstone may not
        # fit either; then the bytes go without it.
        try:
            await deps.spool.abandon(event.source)
        except OSError:
            await remove_spooled(deps, event.source)
        except StorageUnavailable as gone:
            log.warning("gateway.abandon_failed", error=str(gone), source=event.source)
        log.warning("gateway.outbox_disk_full", error=str(exc), event_id=str(event.event_id))
        raise insufficient_storage(exc) from exc
    except OutboxFull as exc:
        # The broker may have taken the event although its confirm was lost: leave a
        # tombstone so the scan stage rejects the file as abandoned (shared/adapters/spool.py).
        try:
            await deps.spool.abandon(event.source)
        except StorageUnavailable as gone:  # S3 spool, S3 down too: `sluice spool clean` later
            log.warning("gateway.abandon_failed", error=str(gone), source=event.source)
        log.warning("gateway.outbox_full", error=str(exc), event_id=str(event.event_id))
        raise unavailable(exc) from exc
    metrics.OUTBOX_KEPT.inc()
    deps.relay.wake()
    log.info("gateway.event_kept", event_id=str(event.event_id))


async def remove_spooled(deps: GatewayDeps, source: str) -> None:
    """Remove the spooled bytes of an upload that is not accepted; an S3 spool that cannot be
    reached leaves them to ``sluice spool clean`` (the file was never announced)."""
    try:
        await deps.spool.delete(source)
    except StorageUnavailable as exc:
        log.warning("gateway.spool_delete_failed", error=str(exc), source=source)
