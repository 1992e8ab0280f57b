"""One PostgreSQL ``LISTEN`` connection per gateway process, fanned out to the open event streams.

The commit stage sends a notice on :data:`shared.history.CHANNEL` each time it records an event
of a file (``{"file_id", "seq"}``, delivered when its transaction commits). The
:class:`HistoryListener` keeps one dedicated asyncpg connection listening on that channel and
wakes the streams subscribed to the notice's file; the streams then read ``file_events`` past
the last ``seq`` they sent. However many streams are open, the process holds one connection for
this (and takes the pool's connections only for those short reads).

When the connection is lost (``pg_terminate_backend``, a PostgreSQL restart, a check query
that fails or does not answer within ``SLUICE_STREAM_KEEPALIVE_S``) it is opened again, with
backoff; once it listens again, **every** stream is woken and reads from the database, which
covers the notices sent while nobody listened. Nothing is lost: the notice is a wake-up, the
rows are the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from typing import Any

import asyncpg
import structlog

from shared.adapters.db import CONNECTION_ERRORS
from shared.history import CHANNEL, parse_notice
from shared.settings import DatabaseSettings
from shared.telemetry import metrics

log = structlog.get_logger("sluice.gateway")

#: The LISTEN connection's ``application_name``: how ops find it in ``pg_stat_activity``.
APPLICATION_NAME = "sluice-gateway-listen"
#: Backoff between two attempts to listen again: from the first delay, doubling, to the last.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0


class Subscription:
    """What a stream waits on: woken when its file's history may have grown, or when the
    listener closes (gateway shutdown). :meth:`close` ends it (once, however often called)."""

    def __init__(
        self,
        file_id: uuid.UUID,
        closing: asyncio.Event,
        registry: dict[uuid.UUID, set[Subscription]],
    ) -> None:
        self.file_id = file_id
        self._wake = asyncio.Event()
        self._closing = closing
        self._registry: dict[uuid.UUID, set[Subscription]] | None = registry
        registry.setdefault(file_id, set()).add(self)

    def close(self) -> None:
        """Stop receiving this file's notices."""
        if self._registry is None:
            return
        subscribers = self._registry.get(self.file_id)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del self._registry[self.file_id]
        self._registry = None

    def wake(self) -> None:
        """Mark the file's history as possibly grown."""
        self._wake.set()

    @property
    def closing(self) -> bool:
        """Whether the gateway is shutting down (the stream should end)."""
        return self._closing.is_set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait until woken (``True``, and the wake-up is consumed) or until ``timeout_s``
        seconds pass (``False``); returns at once when the listener closes."""
        if self._wake.is_set() or self._closing.is_set():
            self._wake.clear()
            return True
        waiters = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self._closing.wait()),
        ]
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()
        return bool(done)


class HistoryListener:
    """The process's ``LISTEN`` on :data:`~shared.history.CHANNEL`, and its subscribers.

    ``connected`` says whether it listens now; ``connections`` counts the connections it has
    opened (1 after start, one more per reconnect).
    """

    def __init__(self, database: DatabaseSettings, check_interval_s: float) -> None:
        self._database = database
        self._check_interval_s = check_interval_s
        self._subscribers: dict[uuid.UUID, set[Subscription]] = {}
        self._closing = asyncio.Event()
        self.connected = asyncio.Event()
        self.connections = 0

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing.is_set()

    def subscribe(self, file_id: uuid.UUID) -> Subscription:
        """A subscription to ``file_id``'s notices, until its :meth:`Subscription.close`.
        Subscribe before reading the history, so that no notice falls between the read and
        the wait."""
        return Subscription(file_id, self._closing, self._subscribers)

    def subscriber_count(self) -> int:
        """Open subscriptions, every file together."""
        return sum(len(s) for s in self._subscribers.values())

    def close(self) -> None:
        """Stop listening and wake every subscriber, whose streams then end."""
        self._closing.set()

    def _wake_all(self) -> None:
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.wake()

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            notice = parse_notice(payload)
        except ValueError as exc:
            log.warning("gateway.history_notice_ignored", error=str(exc))
            return
        for subscription in self._subscribers.get(notice.file_id, ()):
            subscription.wake()

    async def run(self) -> None:
        """Listen until :meth:`close`, opening the connection again whenever it is lost (backoff
        from :data:`RECONNECT_FIRST_S` after a connection that listened, doubling to
        :data:`RECONNECT_MAX_S` while PostgreSQL refuses)."""
        delay = RECONNECT_FIRST_S
        while not self._closing.is_set():
            opened = self.connections
            try:
                await self._listen_once()
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("gateway.listen_lost", error=repr(exc))
            except Exception:  # never stop listening: streams would wait for keep-alives
                log.exception("gateway.listen_failed")
            if self._closing.is_set():
                break
            if self.connections > opened:
                delay = RECONNECT_FIRST_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _listen_once(self) -> None:
        """One connection: LISTEN, wake everybody (they re-read what was missed), then check
        it every ``check_interval_s`` until it is lost or the listener closes."""
        connection: asyncpg.Connection = await asyncpg.connect(
            self._database.url,
            timeout=self._check_interval_s,
            server_settings={"application_name": APPLICATION_NAME},
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _c: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notify)
            self.connections += 1
            metrics.LISTEN_CONNECTIONS.inc()
            self.connected.set()
            log.info("gateway.listening", channel=CHANNEL, connections=self.connections)
            self._wake_all()
            while not self._closing.is_set() and not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _first(self._closing, lost), timeout=self._check_interval_s
                    )
                if not self._closing.is_set() and not lost.is_set():
                    await connection.fetchval("SELECT 1", timeout=self._check_interval_s)
            if lost.is_set() and not self._closing.is_set():
                raise ConnectionResetError("the LISTEN connection was closed by the server")
        finally:
            self.connected.clear()
            if not connection.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2.0)
            if not connection.is_closed():
                connection.terminate()


async def _first(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
