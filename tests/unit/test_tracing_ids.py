"""Trace ids Sluice chooses, and the context it writes into AMQP headers (no services)."""

from __future__ import annotations

import uuid

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from shared.settings import TracingSettings
from shared.telemetry import tracing


def test_exporter_is_none_unless_asked_for_or_an_endpoint_is_set() -> None:
    assert tracing.exporter_choice(TracingSettings()) == "none"
    endpoint = TracingSettings(exporter_otlp_endpoint="http://collector:4318")
    assert tracing.exporter_choice(endpoint) == "otlp"
    traces = TracingSettings(exporter_otlp_traces_endpoint="http://c:4318/v1/traces")
    assert tracing.exporter_choice(traces) == "otlp"
    assert tracing.exporter_choice(TracingSettings(traces_exporter="console")) == "console"


def test_work_no_message_started_is_a_trace_whose_id_is_the_file_id() -> None:
    tracing.configure(TracingSettings(traces_exporter="none"), "sluice-test")
    file_id = uuid.uuid4()
    with tracing.file_span("fallback migrate", file_id):
        headers = tracing.inject({})
        ids = tracing.current_ids()
    assert ids is not None and ids[0] == file_id.hex
    assert headers["traceparent"].startswith(f"00-{file_id.hex}-{ids[1]}-")
    parent = tracing.extract(headers)
    span = tracing.consumer_span("q", headers, "m", file_id=uuid.uuid4())
    span.end()
    assert span.get_span_context().trace_id == file_id.int, "a traced message keeps its trace"
    from_bytes = tracing.extract({"traceparent": headers["traceparent"].encode()})
    assert context_of(from_bytes) == context_of(parent), "AMQP may hand headers over as bytes"


def context_of(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


def test_an_untraced_message_gets_its_file_id_as_trace_id() -> None:
    tracing.configure(TracingSettings(traces_exporter="none"), "sluice-test")
    file_id = uuid.uuid4()
    span = tracing.consumer_span("q", {}, "m", file_id=file_id)
    span.end()
    assert span.get_span_context().trace_id == file_id.int
    other = tracing.consumer_span("q", {}, "m")
    other.end()
    assert other.get_span_context().trace_id != file_id.int
