"""What a stage gives the run loop (``shared.runner``): a :class:`Stage`, and the contract of its
handler.

A handler is a function of an event (``async def handle(event) -> Reply``): it does the stage's
work through the ports it is given and returns the events to publish, or a :class:`Refusal`. It
never touches the channel. Each stage's ``services/<name>/main.py`` builds its :class:`Stage`,
binding the handler to its ``Deps``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared import retry
from shared.breaker import Dependency, dependency_of
from shared.events import BaseEvent
from shared.ports import DeletedFiles


@dataclass(frozen=True)
class Refusal:
    """A handler's answer that it will not take the message, rather than events to publish.

    The run loop publishes ``events`` (confirmed; e.g. the fallback worker's ``file.deferred``,
    so the file's status says why it waits), then dead-letters the message with routing key
    ``route`` and, as for a :class:`~shared.errors.PermanentError`, ``reason`` and ``detail`` in
    its ``x-sluice-error-type`` and ``x-sluice-error-message`` headers (``shared.retry``). A
    decision, not an error (faststream's ``RejectMessage``): the handler returns it.
    """

    reason: str
    detail: str
    route: str
    events: tuple[BaseEvent, ...] = ()


#: What a handler returns: the events to publish, or a :class:`Refusal`.
Reply = Sequence[BaseEvent] | Refusal
#: ``async def handle(event) -> Reply``.
Handler = Callable[[BaseEvent], Awaitable[Reply]]
#: ``async def handle(event, history) -> Reply``: also given the message's failure history.
HistoryHandler = Callable[[BaseEvent, retry.FailureHistory], Awaitable[Reply]]
#: ``async def handle(event, user_id) -> Reply``: also given the AMQP ``user_id`` property of
#: the message, which RabbitMQ verified to be the publisher's own user (None when unset).
PublisherHandler = Callable[[BaseEvent, str | None], Awaitable[Reply]]


@dataclass(frozen=True)
class Stage:
    """A consumer: its name (queue ``<prefix>.<name>``, whose bindings say which event types it
    takes: :func:`shared.topology.accepted_event_types`) and its handler.

    The handler is ``handle``, or, for a stage that needs to know how the message failed before
    (the fallback worker takes the store stage's dead letters), ``handle_with_history``, given
    the :class:`~shared.retry.FailureHistory` the message's headers record, or, for a stage
    that decides by who published the message (the ingress), ``handle_with_publisher``, given
    the message's broker-verified ``user_id``; exactly one is set.
    ``dead_letter_route`` picks the dead-letter exchange's routing key for a failure that is
    not retried (default: the stage name, i.e. ``<prefix>.<name>.dlq``); the store stage sends
    an exhausted S3 outage to the fallback worker's queue that way. ``background``, if set, runs
    beside the consumer until the stop event is set (the fallback's migration loop).

    ``deleted``, if set, is asked when the handler raises :class:`~shared.errors.SourceMissing`:
    for a file deleted or erased while its event was in flight (its bytes purged before this
    stage read them; docs/gdpr.md) the message is acked and dropped, not dead-lettered. The
    process that runs the stages gives every stage one reader (``services/cli/_common.py``).

    ``dependencies`` are what the stage's circuit breaker waits for (``shared.breaker``): the
    error types that may mean clamd, PostgreSQL or S3 is down, each with its probe. A failure of
    one of them, confirmed by its probe, stops the stage's deliveries instead of spending the
    message's attempts. The store stage names none: its S3 outages take the fallback path.

    Raises:
        TypeError: not exactly one handler is set.
    """

    name: str
    handle: Handler | None = None
    close: Callable[[], Awaitable[None]] | None = None
    dead_letter_route: Callable[[BaseException], str] | None = None
    background: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None
    handle_with_history: HistoryHandler | None = None
    dependencies: tuple[Dependency, ...] = ()
    handle_with_publisher: PublisherHandler | None = None
    deleted: DeletedFiles | None = None

    def __post_init__(self) -> None:
        handlers = (self.handle, self.handle_with_history, self.handle_with_publisher)
        if sum(handler is not None for handler in handlers) != 1:
            raise TypeError(
                f"stage {self.name}: set one of handle, handle_with_history, handle_with_publisher"
            )

    async def reply(
        self, event: BaseEvent, headers: Mapping[str, Any], user_id: str | None = None
    ) -> Reply:
        """The handler's reply to ``event``, delivered with ``headers`` by ``user_id``."""
        if self.handle_with_history is not None:
            return await self.handle_with_history(event, retry.FailureHistory.from_headers(headers))
        if self.handle_with_publisher is not None:
            return await self.handle_with_publisher(event, user_id)
        assert self.handle is not None
        return await self.handle(event)

    def dead_letter_key(self, exc: BaseException) -> str:
        """The dead-letter routing key for ``exc``."""
        return self.dead_letter_route(exc) if self.dead_letter_route else self.name

    def dependency_of(self, exc: BaseException) -> Dependency | None:
        """The dependency whose outage ``exc`` may be; None: the failure is the message's."""
        return dependency_of(self.dependencies, exc)
