"""What the ``sluice`` commands share: settings from the environment, the asyncio entry point,
signal handling, and running stages and the gateway in one process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import re
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import typer
from rich.console import Console

from shared import runner
from shared.adapters.db import DeletedFileReader
from shared.settings import Settings
from shared.telemetry import metrics, observers, tracing
from shared.telemetry.health import serve_health
from shared.telemetry.logging import configure as configure_logging
from shared.telemetry.stagestats import StageStats
from shared.topology import Topology

T = TypeVar("T")

#: The console every command prints to.
console = Console()


def settings_from_env() -> Settings:
    """Every settings group from the environment, with logging configured from it.

    Raises:
        ConfigError: a variable is malformed (named in the message).
    """
    settings = Settings.from_env()
    configure_logging(settings.log, secrets=known_secrets(settings))
    return settings


def known_secrets(settings: Settings) -> list[str]:
    """The secrets in ``settings`` that logs must never show: the S3 secret keys (main and
    mirror), the fallback's encryption keys and the passwords in the PostgreSQL and AMQP
    URLs."""
    passwords = (urlsplit(url).password for url in (settings.database.url, settings.amqp.url))
    sealed: list[str] = []
    if (fallback_keys := settings.fallback.encryption_keys) is not None:
        sealed.append(fallback_keys.get_secret_value())
        with contextlib.suppress(ValueError, AttributeError):  # each key too, when it parses
            sealed += [str(key) for key in json.loads(sealed[0]).values()]
    secrets = [settings.s3.secret_key, settings.mirror.secret_key, *sealed]
    return [*secrets, *(p for p in passwords if p)]


def service_name(stages: list[str], gateway: bool) -> str:
    """The default ``service.name`` of a process: ``sluice`` for several roles,
    ``sluice-<worker>`` for one worker, ``sluice-gateway`` for the gateway alone."""
    roles = [*stages, *(["gateway"] if gateway else [])]
    return f"sluice-{roles[0]}" if len(roles) == 1 else "sluice"


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``main()`` to completion in a new event loop."""
    return asyncio.run(main())  # type: ignore[arg-type]


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM (graceful shutdown)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def serve(stages: list[str], gateway: bool) -> None:
    """Run ``stages`` and, with ``gateway``, the HTTP gateway in this process until SIGTERM or
    SIGINT (in-flight messages finish first): the body of ``sluice worker``, ``gateway`` and
    ``run``.

    Raises:
        ConfigError: a variable is malformed (named in the message).
    """
    settings = settings_from_env()
    if stages and not gateway and settings.worker.nice:
        # A stage worker yields the CPU to the gateway (and its render processes, which inherit
        # it, with it): POSIX nice(2), relative to what the process was started with.
        os.nice(settings.worker.nice)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_processes(settings, stages, gateway=gateway, stop=stop)

    run_async(main)


def topology_of(settings: Settings) -> Topology:
    """The broker topology under the configured prefix and delivery limit."""
    return Topology.of(settings.amqp)


async def run_processes(
    settings: Settings, stages: list[str], gateway: bool, stop: asyncio.Event
) -> None:
    """Run ``stages`` (consumers) and optionally the gateway until ``stop`` is set.

    With ``SLUICE_WORKER_HEALTH_PORT`` set, the consumers' ``/healthz``, ``/readyz``,
    ``/metrics`` and ``/stats`` are served there (``shared.telemetry.health``). Tracing is
    configured from ``OTEL_*`` (``shared.telemetry.tracing``) and the consumers' messages are
    counted (``shared.telemetry.metrics``, ``shared.telemetry.stagestats``); the last spans are
    exported on the way out.
    """
    tracing.configure(settings.tracing, service_name(stages, gateway))
    metrics.observe_stages()
    try:
        await _run(settings, stages, gateway, stop)
    finally:
        tracing.shutdown()


async def _run(settings: Settings, stages: list[str], gateway: bool, stop: asyncio.Event) -> None:
    # One reader of deletions for every stage of the process (a pool of at most 2 connections,
    # opened on the first source found gone): a message whose source was purged because its
    # file was deleted in flight is dropped, not dead-lettered (shared.stage.Stage.deleted).
    deleted = DeletedFileReader(settings.database)
    built = [
        await importlib.import_module(f"services.{name}.main").build(settings) for name in stages
    ]
    built = [dataclasses.replace(stage, deleted=stage.deleted or deleted) for stage in built]
    consumers: list[runner.StageConsumer] = []
    jobs = [
        runner.run_until_stopped(
            built, settings.amqp, topology_of(settings), stop, consumers, settings.breaker
        )
    ]
    if stages and settings.worker.health_port is not None:
        observers.observe((stats := StageStats()).record)  # the last minute per stage: /stats
        jobs.append(
            serve_health(
                settings.worker.health_port, consumers, stop, settings.worker.health_host, stats
            )
        )
    if gateway:
        from services.gateway.app import serve

        jobs.append(serve(settings, stop))
    try:
        results = await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        await deleted.close()
    stop.set()
    for result in results:
        if isinstance(result, BaseException):
            raise result


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``24h``, ``7d`` → seconds.

    Raises:
        typer.BadParameter: anything else.
    """
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 24h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]
