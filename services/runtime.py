"""What the ``sluice`` commands share: settings from the environment, the asyncio entry point,
signal handling, and running stages and the gateway in one process."""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared import runner
from shared.health import serve_health
from shared.logging import configure as configure_logging
from shared.settings import Settings
from shared.stagestats import StageStats
from shared.topology import Topology

T = TypeVar("T")


def settings_from_env() -> Settings:
    """Every settings group from the environment, with logging configured from it.

    Raises:
        ConfigError: a variable is malformed (named in the message).
    """
    settings = Settings.from_env()
    configure_logging(settings.log)
    return settings


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``main()`` to completion in a new event loop."""
    return asyncio.run(main())  # type: ignore[arg-type]


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM (graceful shutdown)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def topology_of(settings: Settings) -> Topology:
    """The broker topology under the configured prefix and delivery limit."""
    return Topology.of(settings.amqp)


async def run_processes(
    settings: Settings, stages: list[str], gateway: bool, stop: asyncio.Event
) -> None:
    """Run ``stages`` (consumers) and optionally the gateway until ``stop`` is set.

    With ``SLUICE_WORKER_HEALTH_PORT`` set, the consumers' ``/healthz`` and ``/readyz`` are
    served there, with ``/metrics`` and ``/stats`` (``shared.health``).
    """
    built = [
        await importlib.import_module(f"services.{name}.main").build(settings) for name in stages
    ]
    consumers: list[runner.StageConsumer] = []
    jobs = [runner.run_until_stopped(built, settings.amqp, topology_of(settings), stop, consumers)]
    if stages and settings.worker.health_port is not None:
        runner.observe((stats := StageStats()).record)  # the last minute per stage: /stats
        jobs.append(
            serve_health(
                settings.worker.health_port, consumers, stop, settings.worker.health_host, stats
            )
        )
    if gateway:
        from services.gateway.app import serve

        jobs.append(serve(settings, stop))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    stop.set()
    for result in results:
        if isinstance(result, BaseException):
            raise result
