"""``sluice status [--watch] [--interval S] [--json] [--worker URL ...]``: per stage, queue depth,
in flight, consumers, retrying, dead letters, rates in and out, p50/p95 handling time over the
last minute, and the circuit breaker (``closed``, or ``open``/``probing`` with the dependency it
waits for and for how long) (``shared.ops.pipeline`` says where each number comes from)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.cli._common import run_async, settings_from_env, stop_on_signals, topology_of
from shared.breaker import BreakerState
from shared.ops.pipeline import PipelineStatus, StageStatus, collect_status, default_worker_urls
from shared.settings import Settings
from shared.topology import Topology

console = Console()


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _breaker(row: StageStatus, now: datetime) -> Text:
    """``closed``, or e.g. ``open: clamd 42 s`` in red (the time since it opened)."""
    if row.breaker is None:
        return Text("-")
    if row.breaker == BreakerState.CLOSED or row.breaker_dependency is None:
        return Text(row.breaker)
    text = f"{row.breaker}: {row.breaker_dependency}"
    if row.breaker_since:
        with contextlib.suppress(ValueError):
            since = datetime.fromisoformat(row.breaker_since)
            text += f" {max(0.0, (now - since).total_seconds()):.0f} s"
    return Text(text, style="red")


def render(status: PipelineStatus) -> Group:
    """The status as a rich table (a row per stage) followed by its problems, if any."""
    window = f"{status.window_s} s" if status.window_s else "window"
    table = Table(
        "stage",
        "queue",
        "ready",
        "in flight",
        "consumers",
        "retrying",
        "dead letters",
        "in /s",
        "out /s",
        f"handled ({window})",
        "p50 ms",
        "p95 ms",
        "breaker",
        title=f"Sluice pipeline at {status.collected_at:%Y-%m-%d %H:%M:%S} UTC "
        f"(rates over the last minute)",
    )
    for row in status.stages:
        dead_letters = Text(_count(row.dead_letters), style="red" if row.dead_letters else "")
        consumers = Text(
            _count(row.consumers), style="yellow" if row.consumers == 0 and row.ready else ""
        )
        table.add_row(
            row.stage,
            row.queue,
            _count(row.ready),
            _count(row.in_flight),
            consumers,
            _count(row.retrying),
            dead_letters,
            _number(row.rate_in_per_s),
            _number(row.rate_out_per_s),
            _count(row.handled),
            _number(row.p50_ms, 1),
            _number(row.p95_ms, 1),
            _breaker(row, status.collected_at),
        )
    lines = [Text(f"! {problem}", style="yellow") for problem in status.problems]
    return Group(table, *lines)


def status(
    watch: Annotated[bool, typer.Option("--watch", help="Refresh in place until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option(min=1.0, max=3600.0, help="Seconds between refreshes (--watch).")
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    worker: Annotated[
        list[str] | None,
        typer.Option(
            help="A worker's health server URL whose /stats to read (repeatable; default "
            "SLUICE_STATUS_WORKER_URLS, else http://127.0.0.1:$SLUICE_WORKER_HEALTH_PORT)."
        ),
    ] = None,
) -> None:
    """Per stage: queue depth, in flight, consumers, retrying, dead letters, rates in/out,
    p50/p95 handling time over the last minute and the circuit breaker (open: which dependency,
    for how long). Unreachable sources are listed, not fatal."""
    if watch and as_json:
        raise typer.BadParameter("--watch draws a table; leave out --json", param_hint="--watch")
    settings = settings_from_env()
    topology = topology_of(settings)
    urls = list(worker) if worker else default_worker_urls(settings)
    if not watch:
        result = run_async(lambda: collect_status(settings, topology, urls))
        if as_json:
            typer.echo(json.dumps(result.as_json(), indent=2))
        else:
            if not console.is_terminal:
                console.width = max(console.width, 160)
            console.print(render(result))
        return
    run_async(lambda: _watch(settings, topology, urls, interval))


async def _watch(settings: Settings, topology: Topology, urls: list[str], interval: float) -> None:
    """Redraw every ``interval`` seconds until SIGINT (Ctrl-C) or SIGTERM; on a terminal the
    table is replaced in place, otherwise (rich's rule) only the last one is written."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    first = await collect_status(settings, topology, urls)
    with Live(render(first), console=console, auto_refresh=False) as live:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                live.update(render(await collect_status(settings, topology, urls)), refresh=True)
