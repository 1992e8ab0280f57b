"""Write compose/grafana/dashboards/sluice.json, the Grafana dashboard of the pipeline.

One row per worker (ingress, scan, store, thumbnail, commit, purge, fallback) and per optional
stage (pdftext, ocr, video, mirror) with the same panels, so the rows read alike, and an overview
row on top. Queue numbers come from RabbitMQ's own Prometheus
endpoint (``rabbitmq_prometheus`` with per-object metrics, label ``queue``); handling numbers
from every Sluice process's ``/metrics`` (names in docs/dashboards.md). The queue prefix is a
dashboard variable (``prefix``, default ``sluice``, as ``SLUICE_AMQP_PREFIX``).

    python compose/grafana/build_dashboard.py           # write the file
    python compose/grafana/build_dashboard.py --check   # exit 1 if the file is not current

tests/unit/test_compose.py runs ``--check``'s comparison, so the JSON never drifts from here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "sluice.json"
#: The workers, then the optional stages (the transforms and the backup mirror), whose rows stay
#: empty where they do not run.
STAGES = (
    *("ingress", "scan", "store", "thumbnail", "commit", "purge", "fallback"),
    *("pdftext", "ocr", "video", "mirror"),
)
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
UID = "sluice-pipeline"


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            _target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)
        ],
    }


def _queue(stage: str, suffix: str = "") -> str:
    return f'queue="${{prefix}}.{stage}{suffix}"'


def stage_panels(stage: str) -> list[dict[str, Any]]:
    """The panels of one stage's row, left to right."""
    on = f'stage="{stage}"'
    if stage == "fallback":
        dead_letters = _panel(
            "fallback: kept in PostgreSQL",
            "File versions the fallback keeps Base64 in PostgreSQL while S3 is down. Healthy: 0; "
            "growing: S3 is down (see docs/fallback.md). Its own dead letters go to the store "
            "stage's dead-letter queue.",
            [
                ("max(sluice_fallback_versions)", "versions"),
                ("max(sluice_fallback_oldest_age_seconds)", "oldest age (s)"),
            ],
        )
    else:
        dead_letters = _panel(
            f"{stage}: dead letters",
            f"Messages in {stage}'s dead-letter queue. Healthy: 0. Each one waits for an "
            "inspection and a replay (`sluice dlq list`)."
            + (
                " Here: upstream services' events refused (NotAllowed: an owner, a bucket or "
                "a user they were not given; docs/security.md)."
                if stage == "ingress"
                else ""
            ),
            [(f"sum(rabbitmq_queue_messages{{{_queue(stage, '.dlq')}}})", "dead letters")],
            kind="stat",
        )
    return [
        _panel(
            f"{stage}: queue depth",
            f"Messages ready in {stage}'s queue, delivered and not yet acked (in flight), and "
            "waiting out a retry backoff. Healthy: ready near 0; a ready count that only grows "
            "means the stage cannot keep up or has no consumer.",
            [
                (f"sum(rabbitmq_queue_messages_ready{{{_queue(stage)}}})", "ready"),
                (f"sum(rabbitmq_queue_messages_unacked{{{_queue(stage)}}})", "in flight"),
                (f"sum(rabbitmq_queue_messages{{{_queue(stage, '.retry')}}})", "retrying"),
            ],
        ),
        _panel(
            f"{stage}: consumers",
            "Consumers on the stage queue (one per worker process), and each dependency the "
            "stage's circuit breaker waits for (1 up, 0 down). 0 consumers with a dependency "
            "at 0: the breaker waits for it, and resumes by itself; 0 consumers otherwise, with "
            "messages ready: no worker runs.",
            [
                (f"sum(rabbitmq_queue_consumers{{{_queue(stage)}}})", "consumers"),
                (
                    f"min by (dependency) (sluice_dependency_up{{{on}}})",
                    "{{dependency}} up",
                ),
            ],
            kind="stat",
        ),
        dead_letters,
        _panel(
            f"{stage}: rate in / out",
            "Messages published into the queue per second, and messages the workers finished "
            "with per second (any outcome), over 1 min. Out below in for long: a backlog grows.",
            [
                (
                    f"sum(rate(rabbitmq_queue_messages_published_total{{{_queue(stage)}}}[1m]))",
                    "in",
                ),
                (f"sum(rate(sluice_messages_handled_total{{{on}}}[1m]))", "out"),
            ],
            unit="ops",
        ),
        _panel(
            f"{stage}: handled and failed",
            "Messages handled per second by outcome (acked, retry, dead-lettered, requeued) and "
            "failures per second by error type, over 5 min. Healthy: acked only.",
            [
                (
                    f"sum by (outcome) (rate(sluice_messages_handled_total{{{on}}}[5m]))",
                    "{{outcome}}",
                ),
                (
                    f"sum by (error_type) (rate(sluice_messages_failed_total{{{on}}}[5m]))",
                    "failed: {{error_type}}",
                ),
            ],
            unit="ops",
        ),
        _panel(
            f"{stage}: handling time",
            "p50 and p95 of the time from delivery to ack, over 5 min, from the handling-time "
            "histogram of every worker of the stage.",
            [
                (
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(sluice_handling_duration_seconds_bucket{{{on}}}[5m])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.95)
            ],
            unit="s",
        ),
    ]


def overview_panels() -> list[dict[str, Any]]:
    """The top row: the whole pipeline at once."""
    return [
        _panel(
            "Dead letters by queue",
            "Every dead-letter queue's depth. Healthy: all 0.",
            [
                (
                    'sum by (queue) (rabbitmq_queue_messages{queue=~"${prefix}\\\\..+\\\\.dlq"})',
                    "{{queue}}",
                )
            ],
        ),
        _panel(
            "Retries and dead-lettering",
            "Retries per second by stage, and messages dead-lettered per second by stage and "
            "error type, over 5 min.",
            [
                ("sum by (stage) (rate(sluice_retries_total[5m]))", "retry: {{stage}}"),
                (
                    "sum by (stage, error_type) (rate(sluice_dead_letters_total[5m]))",
                    "dead-lettered: {{stage}} {{error_type}}",
                ),
            ],
            unit="ops",
        ),
        _panel(
            "Uploads",
            "Gateway uploads per second by outcome (accepted, or the reason of a rejection), "
            "and p95 HTTP request time, over 5 min.",
            [
                ("sum by (outcome) (rate(sluice_uploads_total[5m]))", "{{outcome}}"),
                (
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(http_request_duration_seconds_bucket[5m])))",
                    "p95 request time (s)",
                ),
            ],
            unit="ops",
        ),
        _panel(
            "Bytes stored",
            "Bytes written to S3 per second, by the store stage and by the fallback's "
            "migrations, over 5 min; and bytes uploaded to the gateway.",
            [
                ("sum by (stage) (rate(sluice_stored_bytes_total[5m]))", "{{stage}}"),
                ("sum(rate(sluice_upload_bytes_total[5m]))", "uploaded"),
            ],
            unit="Bps",
        ),
        _panel(
            "Fallback size",
            "Bytes of originals kept Base64 in PostgreSQL, and the table's size on disk. "
            "Healthy: 0.",
            [
                ("max(sluice_fallback_bytes)", "originals"),
                ("max(sluice_fallback_table_bytes)", "table on disk"),
            ],
            unit="bytes",
        ),
        _panel(
            "Gateway outbox",
            "file.received events waiting in the gateways' outboxes for RabbitMQ. Healthy: 0; "
            "it grows while the broker is away and drains by itself when it is back "
            "(uploads are refused past SLUICE_GATEWAY_OUTBOX_MAX_EVENTS).",
            [("sum(sluice_outbox_events)", "waiting")],
            kind="stat",
        ),
        _panel(
            "Corrupted versions",
            "File versions whose object is lost or damaged (seed 004). Healthy: 0; any other "
            "value needs `sluice reconcile` and a look.",
            [("max(sluice_corrupted_versions)", "corrupted")],
            kind="stat",
        ),
    ]


def _row(title: str, y: int) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
    }


def dashboard() -> dict[str, Any]:
    """The dashboard JSON (Grafana schema 39): overview row, then one row per stage."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in [("Pipeline", overview_panels())] + [
        (f"Stage: {stage}", stage_panels(stage)) for stage in STAGES
    ]:
        panels.append(_row(title, y))
        y += 1
        width = 24 // len(row)
        for i, panel in enumerate(row):
            panel["gridPos"] = {"h": 8, "w": width, "x": i * width, "y": y}
        panels.extend(row)
        y += 8
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": UID,
        "title": "Sluice pipeline",
        "description": "Per-stage queues, dead letters, rates and handling times "
        "(docs/dashboards.md).",
        "tags": ["sluice"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "prefix",
                    "label": "queue prefix (SLUICE_AMQP_PREFIX)",
                    "type": "textbox",
                    "query": "sluice",
                    "current": {"text": "sluice", "value": "sluice"},
                }
            ]
        },
        "panels": panels,
    }


def render() -> str:
    """The file's exact text."""
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != render():
            print(f"{OUT} is stale; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
