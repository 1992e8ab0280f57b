"""OpenTelemetry tracing: one trace per file, from the gateway (or the first stage) to commit.

The context travels in AMQP message headers as W3C Trace Context (``traceparent``,
``tracestate``; the global propagator, ``OTEL_PROPAGATORS``, default ``tracecontext,baggage``):

- the gateway's upload span (FastAPI instrumentation) publishes ``file.received`` from a
  PRODUCER span whose context it injects into the message;
- each stage consumer extracts it, handles the message in a CONSUMER span ``<queue> process``
  (:func:`consumer_span`), and injects that context into every event it publishes, into the
  retry copy and into the dead letter (so attempt 2 is a child of attempt 1, and a replayed
  dead letter a child of its last failed attempt: one trace id throughout);
- a message without ``traceparent`` (an upstream service that does not trace) starts a trace
  at the stage that receives it, which every later stage continues; its trace id is the
  file id (``FileTraceIds``), so the commit stage, which takes the same ``file.received``,
  joins the same trace.

:func:`configure` sets the process's ``TracerProvider`` from the standard ``OTEL_*`` variables
(:class:`~shared.settings.TracingSettings`). With no exporter and no OTLP endpoint set, spans
are still made (trace ids in logs, propagation) but exported nowhere.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.settings import TracingSettings

#: The tracer every Sluice module uses (a proxy until :func:`configure` sets the provider).
tracer = trace.get_tracer("sluice")

#: Longest wait for the last spans at process exit, seconds: an unreachable collector must not
#: hold up a SIGTERM for the exporter's whole retry budget.
SHUTDOWN_TIMEOUT_S = 3.0
#: A repeated export failure is logged at most once per this many seconds.
EXPORT_WARNING_INTERVAL_S = 60.0
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
)

_provider: TracerProvider | None = None
_batch: BatchSpanProcessor | None = None
_root_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "root_trace_id", default=None
)


class FileTraceIds(RandomIdGenerator):
    """Random ids (the SDK's), except the trace id of a root span started by
    :func:`consumer_span` for an untraced message: the file id's 128 bits."""

    def generate_trace_id(self) -> int:
        chosen = _root_trace_id.get()
        return chosen if chosen else super().generate_trace_id()


class _OncePerInterval(logging.Filter):
    """Lets a log record through once per ``interval_s`` per message template."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            return False
        self._last[key] = now
        return True


def exporter_choice(settings: TracingSettings) -> str:
    """``otlp``, ``console`` or ``none``: ``OTEL_TRACES_EXPORTER`` if set; else ``otlp`` when
    an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), else ``none``.

    The OpenTelemetry default would be ``otlp`` to ``localhost:4318`` always; a process with no
    collector would then retry and warn on every batch, so Sluice exports only where told to.
    """
    if settings.traces_exporter is not None:
        return settings.traces_exporter
    endpoint = settings.exporter_otlp_traces_endpoint or settings.exporter_otlp_endpoint
    return "otlp" if endpoint else "none"


def configure(settings: TracingSettings, default_service_name: str = "sluice") -> TracerProvider:
    """Set this process's tracer provider (once; later calls return the same provider).

    ``service.name`` is ``OTEL_SERVICE_NAME`` or ``default_service_name``; other resource
    attributes come from ``OTEL_RESOURCE_ATTRIBUTES``, sampling from ``OTEL_TRACES_SAMPLER``,
    and the OTLP exporter (HTTP/protobuf) reads its endpoint, headers, timeout and compression
    from ``OTEL_EXPORTER_OTLP_*`` (OpenTelemetry SDK environment variables specification).
    asyncpg is instrumented (``opentelemetry-instrumentation-asyncpg``, statements without
    parameters) once a span processor exports: here when an exporter is chosen, else at the
    first :func:`add_span_processor`. Without one, a span per statement would be made and
    thrown away: a dozen per event in the commit stage, about a third of its CPU (measured with
    cProfile on 4,000 events, docs/performance.md).
    """
    global _provider, _batch
    if _provider is not None:
        return _provider
    name = settings.service_name or default_service_name
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: name}),
        id_generator=FileTraceIds(),
        shutdown_on_exit=False,
    )
    choice = exporter_choice(settings)
    if choice == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _batch = BatchSpanProcessor(OTLPSpanExporter())
    elif choice == "console":
        _batch = BatchSpanProcessor(ConsoleSpanExporter(out=sys.stdout))
    if _batch is not None:
        provider.add_span_processor(_batch)
    rate_limit = _OncePerInterval(EXPORT_WARNING_INTERVAL_S)
    for logger in _EXPORTER_LOGGERS:
        logging.getLogger(logger).addFilter(rate_limit)
    trace.set_tracer_provider(provider)
    _provider = provider
    if _batch is not None:
        _instrument_asyncpg(provider)
    return provider


def _instrument_asyncpg(provider: TracerProvider) -> None:
    """Trace asyncpg's statements (without their parameters) under ``provider``; once."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def add_span_processor(processor: SpanProcessor) -> None:
    """Add ``processor`` (e.g. an in-memory exporter's) to the configured provider, and trace
    asyncpg's statements from now on if they were not yet.

    Raises:
        RuntimeError: :func:`configure` has not run in this process.
    """
    if _provider is None:
        raise RuntimeError("tracing is not configured in this process")
    _provider.add_span_processor(processor)
    _instrument_asyncpg(_provider)


def shutdown() -> None:
    """Export what is buffered, then stop exporting. A collector that has not taken the last
    batch within :data:`SHUTDOWN_TIMEOUT_S` is given up on (its spans are dropped) rather than
    retried for the exporter's whole timeout."""
    if _batch is None:
        return
    closing = threading.Thread(target=_batch.shutdown, name="otel-shutdown", daemon=True)
    closing.start()
    closing.join(SHUTDOWN_TIMEOUT_S)
    if closing.is_alive():
        _batch.span_exporter.shutdown()
        closing.join(SHUTDOWN_TIMEOUT_S)


def _header_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return value if isinstance(value, str) else None


def extract(headers: Mapping[str, Any]) -> Context:
    """The trace context carried in AMQP ``headers`` (an empty context if none)."""
    carrier = {k: text for k, v in headers.items() if (text := _header_text(v)) is not None}
    return propagate.extract(carrier)


def inject(headers: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Write the current span's context into ``headers`` (``traceparent``, ``tracestate``);
    returns ``headers``. With no current span nothing is written."""
    propagate.inject(headers)
    return headers


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span as lowercase hex (32 and 16 digits), or
    ``None`` outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def consumer_span(
    queue: str,
    headers: Mapping[str, Any],
    message_id: str | None,
    *,
    file_id: uuid.UUID | None = None,
) -> Span:
    """A CONSUMER span ``<queue> process`` continuing the trace in ``headers``; start it with
    ``trace.use_span(span, end_on_exit=True)``.

    Without a trace in ``headers`` the span starts one whose trace id is ``file_id``'s 128
    bits (:class:`FileTraceIds`): every stage that receives the same untraced event (scan and
    commit both take ``file.received``) then starts the same trace, one per file.

    Attributes follow the OpenTelemetry messaging semantic conventions (RabbitMQ):
    ``messaging.system``, ``messaging.destination.name`` (the queue), ``messaging.operation.*``
    and ``messaging.message.id``.
    """
    parent = extract(headers)
    untraced = not trace.get_current_span(parent).get_span_context().is_valid
    return _start_span(
        f"{queue} process",
        parent,
        SpanKind.CONSUMER,
        {
            messaging.MESSAGING_SYSTEM: "rabbitmq",
            messaging.MESSAGING_DESTINATION_NAME: queue,
            messaging.MESSAGING_OPERATION_TYPE: "process",
            messaging.MESSAGING_OPERATION_NAME: "process",
            messaging.MESSAGING_MESSAGE_ID: message_id or "",
        },
        root_trace_id=file_id.int if untraced and file_id is not None else None,
    )


def _start_span(
    name: str,
    parent: Context,
    kind: SpanKind,
    attributes: Mapping[str, str | int],
    *,
    root_trace_id: int | None,
) -> Span:
    token = _root_trace_id.set(root_trace_id)
    try:
        return tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
    finally:
        _root_trace_id.reset(token)


@contextmanager
def file_span(
    name: str, file_id: uuid.UUID, carrier: Mapping[str, Any] | None = None
) -> Iterator[Span]:
    """A span for work on ``file_id`` that no message started (the fallback migration), current
    inside the block, with the attribute ``sluice.file_id``. It continues the trace in
    ``carrier`` (W3C ``traceparent``/``tracestate``, as :func:`inject` wrote them) when there is
    one; otherwise it starts a trace whose id is the file id. An exception escaping it is
    recorded (status ERROR) and re-raised."""
    attributes = {"sluice.file_id": str(file_id)}
    parent = extract(carrier or {})
    traced = trace.get_current_span(parent).get_span_context().is_valid
    span = _start_span(
        name,
        parent if traced else Context(),
        SpanKind.INTERNAL,
        attributes,
        root_trace_id=None if traced else file_id.int,
    )
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextmanager
def producer_span(exchange: str, routing_key: str, message_id: str) -> Iterator[Span]:
    """A PRODUCER span ``<exchange> publish`` around one publish (messaging conventions)."""
    with tracer.start_as_current_span(
        f"{exchange} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            messaging.MESSAGING_SYSTEM: "rabbitmq",
            messaging.MESSAGING_DESTINATION_NAME: exchange,
            messaging.MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY: routing_key,
            messaging.MESSAGING_OPERATION_TYPE: "send",
            messaging.MESSAGING_OPERATION_NAME: "publish",
            messaging.MESSAGING_MESSAGE_ID: message_id,
        },
    ) as span:
        yield span


@contextmanager
def client_span(
    name: str,
    attributes: Mapping[str, str | int],
    *,
    expected: tuple[type[BaseException], ...] = (),
) -> Iterator[Span]:
    """A CLIENT span around a call to another service (clamd, S3). An exception escaping it is
    recorded on the span (status ERROR, an ``exception`` event) and re-raised, unless it is one
    of ``expected`` (an answer rather than a failure, e.g. S3's 404 to a HEAD)."""
    with tracer.start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except expected:
            raise
        except BaseException as exc:
            record_failure(span, exc)
            raise


def record_failure(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: an ``exception`` event and status ERROR."""
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))
