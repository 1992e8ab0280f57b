"""Prometheus metrics (prometheus-client, default registry), served at ``/metrics`` by every
worker's health server (``shared.telemetry.health``) and by the gateway;
docs/observability.md lists them.

The message counters and the handling-time histogram are updated by :func:`record_handled`, a
run-loop observer (:func:`shared.telemetry.observers.observe`) that :func:`observe_stages`
registers once per process. Their labels are bounded: stage names, the four outcomes, exception
class names; never file ids or owners.

``sluice_dependency_up`` is set by the run loop's circuit breakers (``shared.runner``). The
fallback gauges below are set by the fallback worker's migration loop, once per probe interval, from
PostgreSQL (issue 4 of the source documents' resilience promise; seed 004's "monitoring of
corrupted counts"). Names follow Prometheus conventions (``_bytes`` base unit, no ``_total`` on
gauges).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.telemetry.observers import Handled, observe

FALLBACK_VERSIONS = Gauge(
    "sluice_fallback_versions", "File versions kept Base64 in PostgreSQL while S3 was down."
)
FALLBACK_BYTES = Gauge(
    "sluice_fallback_bytes", "Bytes of originals kept in the fallback (decoded size)."
)
FALLBACK_TABLE_BYTES = Gauge(
    "sluice_fallback_table_bytes",
    "Size of the fallback_blobs table on disk (pg_total_relation_size).",
)
FALLBACK_OLDEST_AGE = Gauge(
    "sluice_fallback_oldest_age_seconds", "Age of the oldest fallback row; 0 when empty."
)
FILES_STUCK = Gauge(
    "sluice_files_stuck",
    "Files needing a look: attention=yes, one of their messages waits in a dead-letter queue; "
    "attention=no, not final longer than SLUICE_STATUS_STUCK_AFTER_S after they were received.",
    ["attention"],
)
OUTBOX_EVENTS = Gauge(
    "sluice_outbox_events",
    "file.received events waiting in the gateway's outbox for RabbitMQ (shared.adapters.outbox).",
)
OUTBOX_KEPT = Counter(
    "sluice_outbox_kept_total",
    "Uploads answered 202 whose event went to the outbox because RabbitMQ did not confirm it.",
)
OUTBOX_PUBLISHED = Counter(
    "sluice_outbox_published_total",
    "Events the outbox relay published, confirmed by RabbitMQ, and removed from the outbox.",
)
KEY_CACHE_STALE = Counter(
    "sluice_key_cache_stale_total",
    "Requests let in on a cached API key past its TTL because PostgreSQL was unreachable.",
)
CORRUPTED_VERSIONS = Gauge(
    "sluice_corrupted_versions", "File versions marked corrupted (object lost or damaged)."
)

#: Handling-time buckets, seconds: 5 ms to 60 s (clamd and S3 calls are tens of ms; a retry
#: budget's backoff is not part of one handling).
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

DEPENDENCY_UP = Gauge(
    "sluice_dependency_up",
    "1 while the stage's circuit breaker finds the dependency answering, 0 while it is open "
    "for it (shared.breaker); one series per dependency the stage declares.",
    ["stage", "dependency"],
)

MESSAGES_HANDLED = Counter(
    "sluice_messages_handled_total",
    "Messages a stage consumer handled, by outcome: acked, retry, dead-lettered, requeued, "
    "parked (given back, no attempt spent, while a dependency is down), dropped (acked: the "
    "file was deleted while in flight and its source is gone).",
    ["stage", "outcome"],
)
MESSAGES_FAILED = Counter(
    "sluice_messages_failed_total",
    "Messages whose handling failed (retried, dead-lettered or requeued), by exception type.",
    ["stage", "error_type"],
)
HANDLING_DURATION = Histogram(
    "sluice_handling_duration_seconds",
    "Time from delivery to ack (or to the retry/dead-letter publish being confirmed).",
    ["stage"],
    buckets=DURATION_BUCKETS_S,
)
RETRIES = Counter(
    "sluice_retries_total", "Messages sent to the stage's wait queue for a retry.", ["stage"]
)
DEAD_LETTERS = Counter(
    "sluice_dead_letters_total",
    "Messages dead-lettered by the stage (including the store's S3-outage hand-offs to the "
    "fallback worker), by exception type.",
    ["stage", "error_type"],
)
STORED_BYTES = Counter(
    "sluice_stored_bytes_total",
    "Bytes of originals written to S3 (store stage, fallback migration); skipped re-uploads "
    "of an object already there are not counted.",
    ["stage"],
)
UPLOADS = Counter(
    "sluice_uploads_total",
    "Gateway uploads by outcome: accepted, or the error code of the refusal.",
    ["outcome"],
)
UPLOAD_BYTES = Counter("sluice_upload_bytes_total", "Bytes of uploads the gateway accepted.")
TUS_RECEIVED_BYTES = Counter(
    "sluice_tus_received_bytes_total",
    "Bytes of tus PATCH (and creation-with-upload) bodies the gateway received, kept or not.",
)
TUS_EXPIRED = Counter(
    "sluice_tus_expired_total", "Unfinished tus uploads removed by the cleaner once expired."
)
SPOOL_FREE_BYTES = Gauge(
    "sluice_spool_free_bytes",
    "Free bytes on the spool's disk when the gateway last checked (at every upload).",
)
EVENT_STREAMS = Gauge(
    "sluice_event_streams",
    "Event streams (GET /v1/files/{id}/events) open on this gateway process.",
)
EVENT_STREAMS_REFUSED = Counter(
    "sluice_event_streams_refused_total",
    "Event streams refused past their limits: `owner` (429) or `total` (503).",
    ["limit"],
)
LISTEN_CONNECTIONS = Counter(
    "sluice_listen_connections_total",
    "Times the gateway's LISTEN connection (file_events notices) was opened: 1, then one "
    "per reconnect.",
)


def record_handled(handled: Handled) -> None:
    """Count one handled message (a :func:`shared.telemetry.observers.observe` observer)."""
    MESSAGES_HANDLED.labels(handled.stage, handled.outcome).inc()
    HANDLING_DURATION.labels(handled.stage).observe(handled.duration_s)
    if handled.outcome == "acked" or handled.error_type is None:
        return
    error_type = handled.error_type or "unknown"
    MESSAGES_FAILED.labels(handled.stage, error_type).inc()
    if handled.outcome == "retry":
        RETRIES.labels(handled.stage).inc()
    elif handled.outcome == "dead-lettered":
        DEAD_LETTERS.labels(handled.stage, error_type).inc()


def observe_stages() -> None:
    """Count every message this process's stage consumers handle (idempotent)."""
    observe(record_handled)
