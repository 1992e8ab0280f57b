"""Liveness and readiness over HTTP for worker processes (``sluice worker``, ``sluice run``),
and the gateway's ``/metrics`` apart from its public port.

The gateway serves its own ``/healthz`` and ``/readyz``, and its ``/metrics`` on a port of its
own (:func:`metrics_endpoint`, ``SLUICE_GATEWAY_METRICS_PORT``); a worker has no HTTP server,
so :func:`serve_health` gives it a small one (aiohttp) for orchestrators and ops:

- ``GET /healthz`` → 200 ``{"status": "ok"}`` while the process runs;
- ``GET /metrics`` → the Prometheus text exposition of the process's metrics
  (``shared.telemetry.metrics``, prometheus-client's default registry);
- ``GET /readyz`` → 200 ``{"status": "ready", "stages": {"scan": "ready", ...}, "breakers":
  {"scan": {"state": "closed", ...}, ...}}`` when every consumer's connection is open, its
  consumer registered and its circuit breaker closed (:attr:`~shared.runner.StageConsumer.ready`),
  else 503 ``{"error": {"code": "not_ready", "message": "not ready: scan (breaker open:
  clamd)"}, "status": "not_ready", "stages": {"scan": "not_ready", ...}, "breakers": {...}}``
  (the gateway's error shape); each breaker is
  :meth:`shared.breaker.BreakerStatus.as_json` (``state``, ``dependency``, ``since``,
  ``probes_failed``, ``last_error``);
- ``GET /stats`` → 200, what each stage of the process handled over the last minute
  (:meth:`shared.telemetry.stagestats.StageStats.snapshot`, with ``in_flight`` from each consumer's
  :attr:`~shared.runner.StageConsumer.in_flight`) and its ``breaker`` as in ``/readyz``, when the
  process keeps a :class:`~shared.telemetry.stagestats.StageStats`; ``sluice status`` reads it.

A consumer that is reconnecting after a broker restart is not ready; it is again once aio-pika
has reconnected and re-registered it. A stage whose breaker is open or probing is not ready
until its dependency answers and its consumer is registered again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import prometheus_client
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from shared.runner import StageConsumer
from shared.telemetry.stagestats import StageStats

log = structlog.get_logger("sluice.health")


def readiness(consumers: Sequence[StageConsumer]) -> tuple[int, dict[str, object]]:
    """The ``/readyz`` answer for ``consumers``: HTTP status (200 or 503) and JSON body.

    No consumers at all is not ready (the process has nothing to do yet). The message names the
    dependency a stage's open breaker waits for: ``not ready: scan (breaker open: clamd)``.
    """
    stages = {c.stage.name: "ready" if c.ready else "not_ready" for c in consumers}
    breakers = {c.stage.name: c.breaker for c in consumers}
    failed = [
        name
        if breakers[name].dependency is None
        else f"{name} (breaker {breakers[name].state}: {breakers[name].dependency})"
        for name, state in stages.items()
        if state != "ready"
    ]
    shown = {name: breaker.as_json() for name, breaker in breakers.items()}
    if failed or not stages:
        message = f"not ready: {', '.join(failed) or 'no consumers'}"
        body: dict[str, object] = {
            "error": {"code": "not_ready", "message": message},
            "status": "not_ready",
            "stages": stages,
            "breakers": shown,
        }
        return 503, body
    return 200, {"status": "ready", "stages": stages, "breakers": shown}


async def _metrics(_: web.Request) -> web.Response:
    body = prometheus_client.generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    consumers: Sequence[StageConsumer], stats: StageStats | None = None
) -> web.Application:
    """The aiohttp application serving ``/healthz``, ``/readyz`` (for ``consumers``),
    ``/metrics`` and, given ``stats``, ``/stats``."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        status, body = readiness(consumers)
        return web.json_response(body, status=status)

    async def stage_stats(_: web.Request) -> web.Response:
        assert stats is not None
        in_flight: dict[str, int] = {}
        for consumer in consumers:
            name = consumer.stage.name
            in_flight[name] = in_flight.get(name, 0) + consumer.in_flight
        body = stats.snapshot(in_flight)
        stages = body["stages"]
        assert isinstance(stages, dict)
        for consumer in consumers:
            stages[consumer.stage.name]["breaker"] = consumer.breaker.as_json()
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    if stats is not None:
        app.router.add_get("/stats", stage_stats)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve_health(
    port: int,
    consumers: Sequence[StageConsumer],
    stop: asyncio.Event,
    host: str = "127.0.0.1",
    stats: StageStats | None = None,
) -> None:
    """Serve ``/healthz``, ``/readyz``, ``/metrics`` and (given ``stats``) ``/stats`` on
    ``host:port`` (TCP) until ``stop`` is set.

    ``consumers`` is read on every request, so it may be a list the caller fills as consumers
    start.

    Raises:
        OSError: the address cannot be bound (port taken, bad host).
    """
    runner = web.AppRunner(create_app(consumers, stats), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("health endpoint started", host=host, port=port)
        await stop.wait()
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def metrics_endpoint(host: str, port: int) -> AsyncIterator[None]:
    """Serve ``GET /metrics`` (the process's metrics, as :func:`serve_health` does) on
    ``host:port`` while the block runs.

    Raises:
        OSError: the address cannot be bound (port taken, bad host), before the block runs.
    """
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("metrics endpoint started", host=host, port=port)
        yield
    finally:
        await runner.cleanup()
