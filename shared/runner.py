"""The one run loop every consumer uses (faststream's subscriber, Prefect's ``create_handler``).

For each delivery it decodes and validates the event, calls the stage's handler, publishes the
events the handler returns with publisher confirms, and only then acknowledges (RabbitMQ:
at-least-once delivery, so handlers are idempotent). Failures are routed by type:

- :class:`~shared.errors.PermanentError` (and a message that is not a valid event) → the stage's
  dead-letter queue at once, with ``x-sluice-error-*`` headers giving the reason, announced
  by a confirmed ``file.dead_lettered`` about the file, which the commit stage records;
- anything else → the stage's wait queue with a jittered exponential backoff as per-message TTL,
  counted in our own ``x-sluice-attempts`` header (RabbitMQ owns ``x-death``), and after
  ``max_attempts`` → the dead-letter queue (the policy and its headers: ``shared.retry``);
- :class:`~shared.errors.SourceMissing` about a file deleted or erased while its event was in
  flight (asked of the stage's :attr:`~shared.stage.Stage.deleted`) → acked and dropped: its
  bytes were purged on purpose (docs/gdpr.md);
- a consumer that dies mid-message (crash loop) → RabbitMQ redelivers, and the quorum queue's
  delivery limit dead-letters it in the end;
- an error the stage's :attr:`~shared.stage.Stage.dependencies` name, whose dependency then
  does not answer its probe → the stage's circuit breaker opens (``shared.breaker``): the
  consumer is cancelled, the message and every other one in flight are *parked*, and the
  dependency is probed with backoff until it answers; then the consumer is registered again.

Parking gives a message back without spending anything: it goes to the stage's wait queue with
its headers unchanged (so ``x-sluice-attempts`` is too) and a TTL of
``SLUICE_BREAKER_PARK_DELAY_S``, and is acked. A nack or a cancel with unacked messages would
count against the quorum queue's delivery limit (RabbitMQ 3.10), and holding messages unacked
for an outage's length would meet the broker's consumer timeout; parked messages come back to
the stage queue, where they wait, unconsumed, until the breaker closes.

The handler never touches the channel: ``async def handle(event) -> Sequence[Event]``. It may
instead return a :class:`~shared.stage.Refusal`: its events are published, then the message is
dead-lettered. What a stage gives the loop (its handler, its dead-letter routes, what to close)
is a :class:`~shared.stage.Stage`.

Each message is handled in an OpenTelemetry CONSUMER span ``<queue> process`` that continues
the trace in its ``traceparent`` header; events published, retries and dead letters carry this
span's context on (``shared.telemetry.tracing``), and log lines inside it carry its ``trace_id``.
Its outcome is then reported to the process's observers (``shared.telemetry.observers``: metrics,
``/stats``).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import ValidationError

from shared import retry
from shared.adapters import broker
from shared.breaker import BreakerStatus, CircuitBreaker, Dependency
from shared.errors import InvalidEvent, PermanentError, SluiceError, SourceMissing
from shared.events import BaseEvent, parse_event
from shared.settings import AmqpSettings, BreakerSettings
from shared.stage import Refusal, Stage
from shared.telemetry import metrics, tracing
from shared.telemetry.observers import Handled, report
from shared.topology import Topology, accepted_event_types

log = structlog.get_logger("sluice.runner")


@dataclass
class StageConsumer:
    """Consumes one stage queue on its own robust connection until :meth:`stop`.

    The stage takes the event types its queue is bound to
    (:func:`~shared.topology.accepted_event_types`); any other is dead-lettered as invalid.
    Its circuit breaker (module docstring; ``shared.breaker``) follows ``breaker_settings``.

    Raises:
        KeyError: a stage name the topology does not know.
    """

    stage: Stage
    settings: AmqpSettings
    topology: Topology
    breaker_settings: BreakerSettings = field(default_factory=BreakerSettings)
    _connection: AbstractRobustConnection | None = None
    _queue: AbstractQueue | None = None
    _consumer_tag: str | None = None
    _publisher: broker.Publisher | None = None
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    _accepts: frozenset[str] = field(init=False)
    _breaker: CircuitBreaker = field(init=False)
    _trip_lock: asyncio.Lock = field(init=False)
    _probing: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._accepts = accepted_event_types(self.stage.name)
        self._breaker = CircuitBreaker(self.stage.name)
        self._trip_lock = asyncio.Lock()

    @property
    def breaker(self) -> BreakerStatus:
        """The stage's circuit breaker now (``/readyz``, ``/stats``)."""
        return self._breaker.status()

    @property
    def in_flight(self) -> int:
        """Messages being handled right now (delivered, not yet acked, retried or dead-lettered)."""
        return len(self._in_flight)

    @property
    def ready(self) -> bool:
        """Whether the connection is up and the consumer registered (a worker's ``/readyz``).

        False before :meth:`start`, after :meth:`stop`, while the robust connection is
        reconnecting (aio-pika re-registers the consumer under the same tag once it is back; for
        the few milliseconds that takes after the channel reopens this may already be True), and
        while the stage's circuit breaker is not closed (its consumer is cancelled).
        """
        connection, queue = self._connection, self._queue
        return (
            connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and queue is not None
            and not queue.channel.is_closed
            and self._consumer_tag is not None
            and self._breaker.closed
        )

    async def start(self) -> None:
        """Connect, declare the topology, and start consuming.

        Raises:
            BrokerUnavailable: RabbitMQ cannot be reached.
        """
        self._connection = await broker.connect(self.settings)
        self._publisher = await broker.Publisher.create(
            self._connection, self.settings, self.topology
        )
        channel = await broker.open_channel(self._connection, self.settings)
        # A passive declare_queue, not get_queue(ensure=False): only queues declared through
        # the robust channel are re-declared, and their consumers restarted, after a reconnect.
        queue_name = self.topology.queue(self.stage.name)
        self._queue = await channel.declare_queue(queue_name, passive=True)
        for dependency in self.stage.dependencies:
            metrics.DEPENDENCY_UP.labels(self.stage.name, dependency.name.value).set(1)
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consumer started", stage=self.stage.name, queue=self._queue.name)

    async def stop(self) -> None:
        """Stop consuming, let in-flight messages finish within ``shutdown_timeout_s``, close.

        Messages still unacknowledged when the connection closes are requeued by RabbitMQ.
        """
        if self._probing is not None:
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)
        await self._cancel_consumer()
        if self._in_flight:
            _, pending = await asyncio.wait(
                set(self._in_flight), timeout=self.settings.shutdown_timeout_s
            )
            for task in pending:
                task.cancel()
        if self._connection is not None:
            await self._connection.close()
        if self.stage.close is not None:
            await self.stage.close()
        log.info("consumer stopped", stage=self.stage.name)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._process(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        headers: dict[str, Any] = dict(message.headers or {})
        attempt = retry.attempt_of(headers, self.stage.name)
        structlog.contextvars.bind_contextvars(
            stage=self.stage.name, message_id=message.message_id, attempt=attempt
        )
        try:
            decoded: BaseEvent | Exception = self._decode(message)
        except Exception as exc:  # handled (dead-lettered, or retried) inside the span
            decoded = exc
        span = tracing.consumer_span(
            self.topology.queue(self.stage.name),
            headers,
            message.message_id,
            file_id=decoded.file_id if isinstance(decoded, BaseEvent) else None,
        )
        span.set_attribute("sluice.attempt", attempt)
        with trace.use_span(span, end_on_exit=True):
            outcome, detail, error_type, event_type = await self._handle(
                message, decoded, headers, attempt, span
            )
            span.set_attribute("sluice.outcome", outcome)
            duration_s = time.perf_counter() - started
            log.info(
                "message handled",
                outcome=outcome,
                detail=retry.shorten(detail, 300),
                duration_ms=round(duration_s * 1000, 1),
            )
        report(Handled(self.stage.name, outcome, duration_s, error_type, event_type))

    async def _handle(
        self,
        message: AbstractIncomingMessage,
        decoded: BaseEvent | Exception,
        headers: dict[str, Any],
        attempt: int,
        span: trace.Span,
    ) -> tuple[str, str, str | None, str | None]:
        """Handle, publish, ack (or route the failure, ``decoded`` being the decoding error, or
        the handler's refusal) inside the consumer ``span``;
        ``(outcome, detail, error_type, event_type)``."""
        event_type = message.type
        try:
            if isinstance(decoded, Exception):
                raise decoded
            event = decoded
            event_type = event.type
            structlog.contextvars.bind_contextvars(
                file_id=str(event.file_id), event_id=str(event.event_id), event_type=event.type
            )
            span.set_attributes(
                {
                    "sluice.file_id": str(event.file_id),
                    "sluice.event_id": str(event.event_id),
                    "sluice.event_type": event.type,
                }
            )
            if not self._breaker.closed:
                # Delivered before the consumer's cancel took effect: not handled at all.
                outcome = "parked" if await self._park(message, headers) else "requeued"
                return outcome, "circuit breaker open", None, event_type
            try:
                reply = await self.stage.reply(
                    event, headers, broker.verified_publisher(message, self.settings.user)
                )
            except SourceMissing:
                # The file was deleted while this event was in flight: its bytes are purged on
                # purpose. (A failing check is retried like any failure of the stage.)
                if self.stage.deleted is None or not await self.stage.deleted.forgotten(event):
                    raise
                await message.ack()
                return "dropped", "source gone: the file was deleted", None, event_type
            if not isinstance(reply, Refusal):
                await self._publish_all(reply)
                await message.ack()
                return "acked", ",".join(out.type for out in reply), None, event_type
        except PermanentError as exc:
            tracing.record_failure(span, exc)
            routed = await self._fail(
                message,
                headers,
                attempt,
                exc,
                route=self.stage.dead_letter_key(exc),
                event=decoded if isinstance(decoded, BaseEvent) else None,
            )
            outcome = "dead-lettered" if routed else "requeued"
            return outcome, str(exc), type(exc).__name__, event_type
        except Exception as exc:
            tracing.record_failure(span, exc)
            detail = repr(exc) if not isinstance(exc, SluiceError) else str(exc)
            dependency = self.stage.dependency_of(exc)
            if dependency is not None and await self._dependency_down(dependency, exc):
                outcome = "parked" if await self._park(message, headers) else "requeued"
                return outcome, detail, type(exc).__name__, event_type
            again = attempt < self.settings.max_attempts
            route = None if again else self.stage.dead_letter_key(exc)
            outcome = "retry" if again else "dead-lettered"
            about = decoded if isinstance(decoded, BaseEvent) else None
            if not await self._fail(message, headers, attempt, exc, route=route, event=about):
                outcome = "requeued"
            return outcome, detail, type(exc).__name__, event_type
        # Refused: nothing failed, yet the message is not handled (the span says so). Its
        # events first, then the dead letter.
        span.set_status(Status(StatusCode.ERROR, f"{reply.reason}: {reply.detail}"[:500]))
        routed = await self._announce(message, reply.events) and await self._fail(
            message, headers, attempt, reply, route=reply.route
        )
        return ("dead-lettered" if routed else "requeued"), reply.detail, reply.reason, event_type

    def _decode(self, message: AbstractIncomingMessage) -> BaseEvent:
        try:
            event = parse_event(message.body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
                for err in exc.errors()[:5]
            )
            raise InvalidEvent(f"invalid event: {problems}") from None
        if event.type not in self._accepts:
            raise InvalidEvent(f"stage {self.stage.name} does not take {event.type} events")
        return event

    async def _publish_all(self, events: Sequence[BaseEvent]) -> None:
        """Publish ``events`` (each confirmed), each from a PRODUCER span whose context it
        carries (``traceparent``), so the next stage continues this trace."""
        assert self._publisher is not None
        for out in events:
            with tracing.producer_span(
                self.topology.exchange, out.routing_key, str(out.event_id)
            ) as span:
                try:
                    await self._publisher.publish(out, headers=tracing.inject({}))
                except Exception as exc:
                    tracing.record_failure(span, exc)
                    raise

    async def _announce(
        self, message: AbstractIncomingMessage, events: Sequence[BaseEvent]
    ) -> bool:
        """Publish the events of a refusal (e.g. the fallback worker's ``file.deferred``) before
        the message is dead-lettered. False, with the message given back to the broker for a
        redelivery, if a publish was not confirmed."""
        try:
            await self._publish_all(events)
        except Exception as publish_exc:
            await _requeue(message, "announcing a dead letter failed", publish_exc)
            return False
        return True

    async def _fail(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        attempt: int,
        failure: BaseException | Refusal,
        *,
        route: str | None,
        event: BaseEvent | None = None,
    ) -> bool:
        """Send ``message`` to the wait queue (``route`` None) or dead-letter it with routing key
        ``route``, with the headers of ``failure`` (an exception, or a refusal's reason and
        detail), then ack it. False if that could not be confirmed (the message is given back
        to the broker).

        A message about a file (``event``) that lands in a dead-letter queue for an exception is
        announced first: its ``file.dead_lettered`` (:func:`shared.retry.dead_letter_notice`)
        is published, confirmed, so the file shows it needs attention (no file waits unseen).

        The copy carries the current (failed) span's ``traceparent``: the next attempt, or the
        replay of the dead letter, continues the same trace as a child of this attempt."""
        if isinstance(failure, Refusal):
            error_type, error_message = failure.reason, failure.detail
        else:
            error_type, error_message = type(failure).__name__, str(failure) or repr(failure)
        failure_headers = retry.failure_headers(
            headers,
            stage=self.stage.name,
            error_type=error_type,
            error_message=error_message,
            attempts=attempt + 1 if route is None else attempt,
        )
        tracing.inject(failure_headers)
        assert self._publisher is not None
        try:
            if route is None:
                delay_s = retry.backoff_delay_s(
                    attempt, self.settings.retry_base_delay_s, self.settings.retry_max_delay_s
                )
                await self._publisher.publish_to_queue(
                    self.topology.retry_queue(self.stage.name),
                    broker.republished(
                        message,
                        failure_headers,
                        expiration_s=max(delay_s, 0.001),
                        own_user=self.settings.user,
                    ),
                )
            else:
                notice = retry.dead_letter_notice(event, route, failure_headers)
                if notice is not None:
                    await self._publish_all([notice])
                await self._publisher.publish_to_exchange(
                    self.topology.dead_letter_exchange,
                    route,
                    broker.republished(message, failure_headers, own_user=self.settings.user),
                )
            await message.ack()
        except Exception as publish_exc:
            # Neither retry nor dead letter could be confirmed: give the message back.
            await _requeue(message, "failure routing failed", publish_exc)
            return False
        return True

    # -- the circuit breaker -------------------------------------------------------------------

    async def _dependency_down(self, dependency: Dependency, error: BaseException) -> bool:
        """Whether ``error`` (raised by the handler) is an outage of ``dependency``: the breaker
        is already open, or the dependency does not answer its probe now, which opens it. False:
        the dependency answers, so the failure is the message's own."""
        async with self._trip_lock:  # one probe at a time: what is in flight fails together
            if not self._breaker.closed:
                return True
            try:
                await asyncio.wait_for(dependency.probe(), self.breaker_settings.probe_timeout_s)
            except Exception as probe_exc:
                self._open(dependency, error, probe_exc)
                return True
            return False

    def _open(self, dependency: Dependency, error: BaseException, probe_exc: BaseException) -> None:
        self._breaker.open(dependency, error)
        metrics.DEPENDENCY_UP.labels(self.stage.name, dependency.name.value).set(0)
        log.warning(
            "breaker opened",
            stage=self.stage.name,
            dependency=dependency.name.value,
            error=retry.shorten(f"{type(error).__name__}: {error}", 300),
            probe_error=retry.shorten(repr(probe_exc), 300),
        )
        # A task of its own, outside this message's log context and trace.
        self._probing = asyncio.create_task(
            self._probe_until_back(dependency), context=contextvars.Context()
        )

    async def _probe_until_back(self, dependency: Dependency) -> None:
        """Cancel the consumer, probe ``dependency`` with equal-jitter exponential backoff
        (``shared.retry.backoff_delay_s``) until it answers, close the breaker, consume again."""
        await self._cancel_consumer()
        settings = self.breaker_settings
        while True:
            await asyncio.sleep(
                retry.backoff_delay_s(
                    self._breaker.probes_failed + 1,
                    settings.probe_base_delay_s,
                    settings.probe_max_delay_s,
                )
            )
            self._breaker.probing()
            try:
                await asyncio.wait_for(dependency.probe(), settings.probe_timeout_s)
            except Exception as exc:
                self._breaker.probe_failed(exc)
                continue
            probes_failed = self._breaker.probes_failed
            duration_s = self._breaker.close()
            metrics.DEPENDENCY_UP.labels(self.stage.name, dependency.name.value).set(1)
            log.info(
                "breaker closed",
                stage=self.stage.name,
                dependency=dependency.name.value,
                duration_s=round(duration_s, 3),
                probes_failed=probes_failed,
            )
            break
        await self._consume_again()

    async def _consume_again(self) -> None:
        """Register the consumer on the stage queue again; while the broker is away, keep
        trying with the probes' backoff (``ready`` stays False meanwhile)."""
        assert self._queue is not None
        settings = self.breaker_settings
        attempt = 1
        while True:
            try:
                self._consumer_tag = await self._queue.consume(self._on_message)
            except Exception as exc:
                log.warning("consumer not registered again yet", error=repr(exc), attempt=attempt)
                await asyncio.sleep(
                    retry.backoff_delay_s(
                        attempt, settings.probe_base_delay_s, settings.probe_max_delay_s
                    )
                )
                attempt += 1
                continue
            log.info("consumer started again", stage=self.stage.name, queue=self._queue.name)
            return

    async def _cancel_consumer(self) -> None:
        """Cancel the consumer, if registered: no new deliveries; those already delivered are
        still handled, and acked on the same channel."""
        tag, self._consumer_tag = self._consumer_tag, None
        if self._queue is None or tag is None:
            return
        try:
            await self._queue.cancel(tag)
        except Exception as exc:  # the channel may already be gone; it is not restored then
            log.warning("cancel failed", stage=self.stage.name, error=repr(exc))

    async def _park(self, message: AbstractIncomingMessage, headers: dict[str, Any]) -> bool:
        """Give ``message`` back without spending an attempt (module docstring): to the wait
        queue with ``headers`` as they were and a TTL of ``SLUICE_BREAKER_PARK_DELAY_S``, then
        ack. False if that could not be confirmed (the message is given back to the broker)."""
        assert self._publisher is not None
        parked = broker.republished(
            message,
            tracing.inject(dict(headers)),
            expiration_s=self.breaker_settings.park_delay_s,
            own_user=self.settings.user,
        )
        try:
            await self._publisher.publish_to_queue(
                self.topology.retry_queue(self.stage.name), parked
            )
            await message.ack()
        except Exception as publish_exc:
            await _requeue(message, "parking failed", publish_exc)
            return False
        return True


async def _requeue(message: AbstractIncomingMessage, what: str, cause: BaseException) -> None:
    """Give ``message`` back to the broker after ``what`` failed with ``cause``. If the channel
    is gone, RabbitMQ requeues it anyway when the connection closes."""
    log.error(f"{what}; requeueing", error=repr(cause))
    try:
        await message.nack(requeue=True)
    except Exception as nack_exc:
        log.error("nack failed", error=repr(nack_exc))


async def run_until_stopped(
    stages: Sequence[Stage],
    settings: AmqpSettings,
    topology: Topology,
    stop: asyncio.Event,
    started: list[StageConsumer] | None = None,
    breaker: BreakerSettings | None = None,
) -> None:
    """Start a consumer per stage, wait for ``stop``, then shut every consumer down gracefully.

    ``started``, if given, is filled with each consumer once it consumes (for health checks).
    Each stage has a circuit breaker of its own, following ``breaker`` (default: the defaults):
    an outage stops only the stages that depend on what is down.
    """
    breaker = breaker or BreakerSettings()
    consumers = [StageConsumer(stage, settings, topology, breaker) for stage in stages]
    started = [] if started is None else started
    background: list[asyncio.Task[None]] = []
    try:
        for consumer in consumers:
            await consumer.start()
            started.append(consumer)
            if consumer.stage.background is not None:
                background.append(asyncio.create_task(consumer.stage.background(stop)))
        await stop.wait()
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in started), return_exceptions=True)
