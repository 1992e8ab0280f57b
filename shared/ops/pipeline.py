"""The pipeline at a glance, per stage: what waits, what is being handled, what was dead-lettered,
how fast messages come and go, and how long handling takes (``sluice status``, the ops page).

Where each number comes from:

=================  ==========================================================================
field              source
=================  ==========================================================================
ready              the stage queue's ``messages_ready`` (management API; AMQP passive
                   declare's message count when the API is unreachable)
in_flight          the stage queue's ``messages_unacknowledged``: delivered to a consumer, not
                   yet acked (without the API: the workers' ``/stats`` ``in_flight``)
consumers          the stage queue's ``consumers``
retrying           ready + unacked of the stage's wait queue (``<stage>.retry``): messages
                   sitting out a backoff before their next attempt
dead_letters       ready + unacked of ``<stage>.dlq``; None for the fallback worker, whose
                   dead letters go to the store stage's dead-letter queue
rate_in_per_s      the stage queue's ``publish`` rate averaged over the last 60 s (messages
                   clients published into it; retries coming back from the wait queue are
                   dead-lettered back by the broker, not published, so they are not in it)
rate_out_per_s     the stage queue's ``ack`` rate over the last 60 s: every message a worker
                   finished with, acked after its events were confirmed, or after it was sent
                   to the wait queue or the dead-letter exchange (the run loop acks then too)
handled, acked,    summed over the workers' ``/stats`` (their last ``window_s`` seconds)
retried,
dead_lettered
p50_ms, p95_ms     percentiles of the workers' merged raw handling-time samples
parked             summed over the workers' ``/stats``: messages given back without spending
                   an attempt while the stage's circuit breaker was open
breaker            the workers' ``/stats`` ``breaker`` (``shared.breaker``): ``closed``,
                   ``open`` or ``probing``; with several workers of a stage, the worst
                   (open, then probing, then closed), and with it ``breaker_dependency``
                   (``clamd``, ``postgresql``, ``s3``), ``breaker_since`` (the earliest UTC
                   time a worker's breaker opened, ISO 8601) and ``breaker_last_error``
=================  ==========================================================================

Rates come from the management API's message-rate samples (``msg_rates_age=60``,
``msg_rates_incr=5``: a sample every 5 s over the last minute, ``avg_rate`` = the difference
between the oldest and newest sample over their time apart); the API refreshes its statistics
every 5 s (``collect_statistics_interval``), so a number can be up to that old. Nothing that
cannot be had stops the rest: an unreachable API or worker becomes a line in ``problems``, and
so does a stage whose breaker is not closed (``scan: breaker open since …: clamd unavailable``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import aiormq
import httpx

from shared.breaker import BreakerState
from shared.settings import Settings
from shared.telemetry.stagestats import summarise
from shared.topology import FALLBACK, MIRROR, TRANSFORMS, WORKERS, Topology

#: Seconds of message-rate history asked of the management API, and its sampling step.
RATES_AGE_S = 60
RATES_INCR_S = 5
_WORKER_COUNTERS = ("handled", "acked", "retried", "dead_lettered", "parked")
#: Which breaker state a stage shows when its workers disagree: the worst one.
_BREAKER_RANK = {BreakerState.CLOSED: 0, BreakerState.PROBING: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True)
class QueueNumbers:
    """One queue as the broker reports it; rates None when the broker gives none."""

    ready: int
    unacked: int | None
    consumers: int
    rate_in_per_s: float | None = None
    rate_out_per_s: float | None = None

    @property
    def depth(self) -> int:
        """Messages in the queue, ready or delivered and not yet acked."""
        return self.ready + (self.unacked or 0)


@dataclass(frozen=True)
class StageStatus:
    """One stage's row (see the module docstring for each field's source); None = unknown."""

    stage: str
    queue: str
    ready: int | None = None
    in_flight: int | None = None
    consumers: int | None = None
    retrying: int | None = None
    dead_letters: int | None = None
    rate_in_per_s: float | None = None
    rate_out_per_s: float | None = None
    handled: int | None = None
    acked: int | None = None
    retried: int | None = None
    dead_lettered: int | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    parked: int | None = None
    breaker: str | None = None
    breaker_dependency: str | None = None
    breaker_since: str | None = None
    breaker_last_error: str | None = None


@dataclass(frozen=True)
class PipelineStatus:
    """Every stage's row, when they were collected, and what could not be had."""

    collected_at: datetime
    stages: tuple[StageStatus, ...]
    problems: tuple[str, ...] = ()
    window_s: int | None = None

    def stage(self, name: str) -> StageStatus:
        """The row of stage ``name``.

        Raises:
            KeyError: no such stage.
        """
        for row in self.stages:
            if row.stage == name:
                return row
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        """``{"collected_at": iso, "window_s": 60, "stages": [{"stage": "scan", "queue":
        "sluice.scan", "ready": 0, ...}, ...], "problems": [...]}``."""
        return {
            "collected_at": self.collected_at.isoformat(),
            "window_s": self.window_s,
            "stages": [asdict(row) for row in self.stages],
            "problems": list(self.problems),
        }


@dataclass
class _WorkerTotals:
    counts: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    durations_ms: list[float] = field(default_factory=list)
    breaker: dict[str, Any] | None = None

    def add_breaker(self, breaker: Mapping[str, Any]) -> None:
        """Keep the worst of the workers' breakers, with the earliest ``since`` of that state."""
        try:
            state = BreakerState(str(breaker.get("state")))
        except ValueError:
            return
        if self.breaker is None:
            self.breaker = dict(breaker)
            return
        kept = BreakerState(self.breaker["state"])
        if _BREAKER_RANK[state] > _BREAKER_RANK[kept]:
            self.breaker = dict(breaker)
        elif state == kept and state != BreakerState.CLOSED:
            since, kept_since = breaker.get("since"), self.breaker.get("since")
            if since and (not kept_since or str(since) < str(kept_since)):
                self.breaker = dict(breaker)


def default_worker_urls(settings: Settings) -> list[str]:
    """``SLUICE_STATUS_WORKER_URLS``, or the local worker's health server when only
    ``SLUICE_WORKER_HEALTH_PORT`` is set, or nothing."""
    if settings.status.worker_urls:
        return list(settings.status.worker_urls)
    if settings.worker.health_port is not None:
        return [f"http://127.0.0.1:{settings.worker.health_port}"]
    return []


async def collect_status(
    settings: Settings, topology: Topology, worker_urls: Sequence[str]
) -> PipelineStatus:
    """Collect every stage's numbers (scan, store, thumbnail, commit, fallback) at once.

    Queue numbers come from the RabbitMQ management API at ``SLUICE_STATUS_MANAGEMENT_URL``
    with the credentials and virtual host of ``SLUICE_AMQP_URL``, or, if it cannot be asked,
    from AMQP passive declares (ready and consumers only); handling numbers from each of
    ``worker_urls``'s ``/stats``. Never raises for an unreachable source: each becomes a line in
    ``problems`` and its fields stay None.
    """
    problems: list[str] = []
    management, workers = await asyncio.gather(
        _queues_from_management(settings, topology), _worker_totals(settings, worker_urls)
    )
    queues, broker_problem = management
    if broker_problem is not None:
        problems.append(broker_problem)
        queues, broker_problem = await _queues_from_amqp(settings, topology)
        if broker_problem is not None:
            problems.append(broker_problem)
    totals, window_s, worker_problems = workers
    problems.extend(worker_problems)
    rows = [
        _stage_row(stage, topology, queues, totals) for stage in (*WORKERS, *TRANSFORMS, MIRROR)
    ]
    if broker_problem is None:
        problems.extend(_queue_problems(rows, queues))
    problems.extend(
        f"{row.stage}: breaker {row.breaker} since {row.breaker_since}: "
        f"{row.breaker_dependency} unavailable ({row.breaker_last_error})"
        for row in rows
        if row.breaker not in (None, BreakerState.CLOSED)
    )
    return PipelineStatus(datetime.now(UTC), tuple(rows), tuple(problems), window_s)


def _stage_row(
    stage: str,
    topology: Topology,
    queues: Mapping[str, QueueNumbers],
    totals: Mapping[str, _WorkerTotals],
) -> StageStatus:
    name = topology.queue(stage)
    work = queues.get(name)
    retry = queues.get(topology.retry_queue(stage))
    dlq = None if stage == FALLBACK else queues.get(topology.dead_letter_queue(stage))
    worker = totals.get(stage)
    in_flight = work.unacked if work is not None else None
    if in_flight is None and worker is not None:
        in_flight = worker.in_flight
    p50, p95 = summarise(worker.durations_ms) if worker is not None else (None, None)
    counts = worker.counts if worker is not None else {}
    breaker = (worker.breaker if worker is not None else None) or {}
    return StageStatus(
        stage=stage,
        queue=name,
        ready=work.ready if work is not None else None,
        in_flight=in_flight,
        consumers=work.consumers if work is not None else None,
        retrying=retry.depth if retry is not None else None,
        dead_letters=dlq.depth if dlq is not None else None,
        rate_in_per_s=work.rate_in_per_s if work is not None else None,
        rate_out_per_s=work.rate_out_per_s if work is not None else None,
        handled=counts.get("handled"),
        acked=counts.get("acked"),
        retried=counts.get("retried"),
        dead_lettered=counts.get("dead_lettered"),
        p50_ms=p50,
        p95_ms=p95,
        parked=counts.get("parked"),
        breaker=breaker.get("state"),
        breaker_dependency=breaker.get("dependency"),
        breaker_since=breaker.get("since"),
        breaker_last_error=breaker.get("last_error"),
    )


def _queue_problems(rows: Sequence[StageStatus], queues: Mapping[str, QueueNumbers]) -> list[str]:
    """What the broker's answer shows wrong: a stage queue missing, or messages no one takes."""
    if not any(row.queue in queues for row in rows):
        return ["no stage queue exists under this prefix (is the topology declared?)"]
    problems = []
    for row in rows:
        if row.queue not in queues:
            problems.append(f"queue {row.queue} not found (is the topology declared?)")
        elif row.consumers == 0 and row.ready:
            problems.append(f"{row.stage}: {row.ready} message(s) wait and no consumer runs")
    return problems


def _amqp_parts(settings: Settings) -> tuple[str, str, str]:
    """(user, password, virtual host) of ``SLUICE_AMQP_URL`` (AMQP URI spec defaults)."""
    parts = urlsplit(settings.amqp.url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return unquote(parts.username or "guest"), unquote(parts.password or "guest"), vhost


def _avg_rate(stats: Mapping[str, Any], name: str) -> float:
    details = stats.get(f"{name}_details") or {}
    return round(float(details.get("avg_rate", details.get("rate", 0.0)) or 0.0), 3)


async def _queues_from_management(
    settings: Settings, topology: Topology
) -> tuple[dict[str, QueueNumbers], str | None]:
    """Every queue under the topology's prefix, from one ``GET /api/queues/<vhost>``."""
    user, password, vhost = _amqp_parts(settings)
    base = settings.status.management_url.rstrip("/")
    url = f"{base}/api/queues/{quote(vhost, safe='')}"
    params: dict[str, str | int] = {
        "page": 1,
        "page_size": 500,
        "name": f"^{re.escape(topology.prefix)}\\.",
        "use_regex": "true",
        "msg_rates_age": RATES_AGE_S,
        "msg_rates_incr": RATES_INCR_S,
    }
    try:
        async with httpx.AsyncClient(
            auth=(user, password), timeout=settings.status.timeout_s
        ) as client:
            response = await client.get(url, params=params)
            response.raise_for_status()
            items = response.json()["items"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return {}, (
            f"RabbitMQ management API at {base} unreachable ({_short_error(exc)}): queue "
            "depths and consumers from AMQP; no in-flight counts or rates"
        )
    queues = {}
    for item in items:
        stats = item.get("message_stats") or {}
        queues[str(item["name"])] = QueueNumbers(
            ready=int(item.get("messages_ready") or 0),
            unacked=int(item.get("messages_unacknowledged") or 0),
            consumers=int(item.get("consumers") or 0),
            rate_in_per_s=_avg_rate(stats, "publish"),
            rate_out_per_s=_avg_rate(stats, "ack"),
        )
    return queues, None


async def _queues_from_amqp(
    settings: Settings, topology: Topology
) -> tuple[dict[str, QueueNumbers], str | None]:
    """Ready count and consumers of every queue by passive declares (no unacked, no rates)."""
    names = [
        name
        for stage in (*WORKERS, *TRANSFORMS, MIRROR)
        for name in (
            topology.queue(stage),
            topology.retry_queue(stage),
            *(() if stage == FALLBACK else (topology.dead_letter_queue(stage),)),
        )
    ]
    queues: dict[str, QueueNumbers] = {}
    try:
        connection = await aio_pika.connect(settings.amqp.url, timeout=settings.status.timeout_s)
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
        return queues, f"RabbitMQ unreachable over AMQP too ({_short_error(exc)})"
    try:
        channel = await connection.channel()
        for name in names:
            try:
                declared = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                channel = await connection.channel()  # a failed passive declare closes it
                continue
            result = declared.declaration_result
            queues[name] = QueueNumbers(
                int(result.message_count or 0), None, int(result.consumer_count or 0)
            )
    finally:
        await connection.close()
    return queues, None


async def _worker_totals(
    settings: Settings, worker_urls: Sequence[str]
) -> tuple[dict[str, _WorkerTotals], int | None, list[str]]:
    """Per stage: counts and in-flight summed, samples merged, over every worker's ``/stats``."""
    totals: dict[str, _WorkerTotals] = {}
    problems: list[str] = []
    windows: set[int] = set()
    if not worker_urls:
        problems.append("no worker /stats URLs (SLUICE_STATUS_WORKER_URLS): no handling times")
        return totals, None, problems
    async with httpx.AsyncClient(timeout=settings.status.timeout_s) as client:
        answers = await asyncio.gather(
            *(client.get(f"{url.rstrip('/')}/stats") for url in worker_urls),
            return_exceptions=True,
        )
    for url, answer in zip(worker_urls, answers, strict=True):
        try:
            if isinstance(answer, BaseException):
                raise answer
            answer.raise_for_status()
            body = answer.json()
            windows.add(int(body["window_s"]))
            stages = dict(body["stages"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"worker {url} unreachable ({_short_error(exc)})")
            continue
        for stage, numbers in stages.items():
            total = totals.setdefault(stage, _WorkerTotals())
            for name in _WORKER_COUNTERS:
                total.counts[name] = total.counts.get(name, 0) + int(numbers.get(name) or 0)
            total.in_flight += int(numbers.get("in_flight") or 0)
            if isinstance(numbers.get("breaker"), dict):
                total.add_breaker(numbers["breaker"])
            total.durations_ms.extend(float(ms) for ms in numbers.get("durations_ms") or ())
    if len(windows) > 1:
        problems.append(f"workers report different windows: {sorted(windows)} s")
    return totals, max(windows) if windows else None, problems


def _short_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"
