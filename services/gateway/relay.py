"""The outbox relay: publishes the events the gateway kept while RabbitMQ was away.

One task per gateway process (started by the app's lifespan). It wakes when an event is put in
the outbox (:meth:`OutboxRelay.wake`) and every :data:`POLL_S` seconds, takes the outbox's
relay lock (one relay drains a shared outbox at a time), and publishes the waiting events
oldest first with publisher confirms, removing each entry only once it is confirmed. When a
publish is not confirmed it stops, waits a jittered exponential backoff
(:func:`shared.retry.backoff_delay_s`, :data:`RETRY_BASE_S` doubling up to :data:`RETRY_MAX_S`)
and starts again from the oldest: order is kept, and an event is never dropped. An event the
broker took but whose confirm was lost is published again with the same ``event_id``; the
stages deduplicate on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from shared.adapters.broker import Publisher
from shared.adapters.outbox import EventOutbox
from shared.errors import BrokerUnavailable
from shared.retry import backoff_delay_s
from shared.telemetry import metrics

log = structlog.get_logger("sluice.gateway.relay")

#: Seconds between looks at the outbox when nothing wakes the relay (another gateway's events,
#: entries left by a crash).
POLL_S = 1.0
#: Backoff after an unconfirmed publish, seconds: first wait, and the most it grows to.
RETRY_BASE_S = 0.5
RETRY_MAX_S = 10.0
#: Entries read per pass.
BATCH = 500


class OutboxRelay:
    """Drains ``outbox`` through ``publisher``; :meth:`run` until ``stop`` is set.

    ``connected`` tells whether the broker connection is up: while it is not, the relay does
    not try (a publish would only time out) and waits for :meth:`reconnected`.
    """

    def __init__(
        self, outbox: EventOutbox, publisher: Publisher, connected: Callable[[], bool]
    ) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self._connected = connected
        self._wakeup = asyncio.Event()
        self._reconnected = asyncio.Event()
        self._failures = 0

    def wake(self) -> None:
        """Look at the outbox now (an event was just put in it)."""
        self._wakeup.set()

    def reconnected(self, *_: object) -> None:
        """The broker connection is back: try now, cutting a backoff short (a callback of
        aio-pika's ``reconnect_callbacks``)."""
        self._reconnected.set()
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish waiting events until ``stop`` is set; never raises for a broker or disk
        fault (they are logged and tried again)."""
        while not stop.is_set():
            self._wakeup.clear()
            self._reconnected.clear()
            published = 0
            if self._connected():
                try:
                    published = await self.drain()
                    metrics.OUTBOX_EVENTS.set(await asyncio.to_thread(self._outbox.size))
                except Exception as exc:  # a disk error: keep the task alive, try again later
                    log.error("gateway.relay_failed", error=repr(exc))
            if published and not self._failures:
                continue  # there may be more
            if self._failures:  # a new upload does not cut a backoff short; a reconnect does
                delay = backoff_delay_s(self._failures, RETRY_BASE_S, RETRY_MAX_S)
                await _first(delay, self._reconnected, stop)
            else:
                await _first(POLL_S, self._wakeup, stop)

    async def drain(self) -> int:
        """One pass: publish up to :data:`BATCH` waiting events in order; the number published.

        Stops at the first unconfirmed publish (counted in ``self._failures`` for the backoff).
        """
        with self._outbox.relay_lock() as held:
            if not held:
                return 0
            published = 0
            for entry in await self._outbox.entries(BATCH):
                try:
                    await self._publisher.publish(entry.event, headers=entry.headers)
                except BrokerUnavailable as exc:
                    self._failures += 1
                    log.info(
                        "gateway.relay_waiting",
                        error=str(exc),
                        attempt=self._failures,
                        event_id=str(entry.event.event_id),
                    )
                    return published
                await self._outbox.remove(entry)
                metrics.OUTBOX_PUBLISHED.inc()
                published += 1
            if published:
                log.info("gateway.relay_published", events=published)
            self._failures = 0
            return published


async def _first(timeout_s: float, *events: asyncio.Event) -> None:
    """Return as soon as one of ``events`` is set, or after ``timeout_s`` seconds."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
