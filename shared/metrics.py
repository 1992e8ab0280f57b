"""Prometheus metrics (prometheus-client, default registry), served at ``/metrics`` by every
worker's health server (``shared.health``).

The gauges below are set by the fallback worker's migration loop, once per probe interval, from
PostgreSQL (issue 4 of the source documents' resilience promise; seed 004's "monitoring of
corrupted counts"). Names follow Prometheus conventions (``_bytes`` base unit, no ``_total`` on
gauges).
"""

from __future__ import annotations

from prometheus_client import Gauge

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
CORRUPTED_VERSIONS = Gauge(
    "sluice_corrupted_versions", "File versions marked corrupted (object lost or damaged)."
)
