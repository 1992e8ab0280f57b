"""The ops commands of ``sluice``: dead-letter inspection and replay, and health checks.

::

    sluice dlq list STAGE [--json]        what sits in a stage's dead-letter queue (nothing moves)
    sluice dlq replay STAGE [--limit N]   move dead letters back to the stage, attempts reset
    sluice health TARGET [--port N]       a process's /readyz: exit 0 when TARGET is ready
    sluice spool clean [--older-than D]   remove stale spool entries (never files in flight)
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from services.runtime import run_async, settings_from_env, topology_of
from shared import broker
from shared.deadletters import DeadLetter, ReplayResult, list_dead_letters, replay
from shared.settings import GatewaySettings, load
from shared.topology import STAGES, WORKERS

dlq_app = typer.Typer(no_args_is_help=True, help="Dead-letter queues: inspect and replay.")
spool_app = typer.Typer(no_args_is_help=True, help="The spool directory.")
console = Console()
StageName = StrEnum("StageName", {name: name for name in STAGES})  # type: ignore[misc]
WorkerName = StrEnum("WorkerName", {name: name for name in WORKERS})  # type: ignore[misc]
HealthTarget = StrEnum(  # type: ignore[misc]
    "HealthTarget", {name: name for name in (*WORKERS, "gateway")}
)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""


def _dead_letter_json(letter: DeadLetter) -> dict[str, object]:
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in dataclasses.asdict(letter).items()
    }


@dlq_app.command("list")
def dlq_list(
    stage: Annotated[StageName, typer.Argument(help="The stage whose dead letters to show.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Show STAGE's dead letters, oldest first, without consuming or reordering them."""
    settings = settings_from_env()
    topology = topology_of(settings)

    async def main() -> list[DeadLetter]:
        connection = await broker.connect(settings.amqp)
        try:
            return await list_dead_letters(connection, topology, str(stage.value))
        finally:
            await connection.close()

    letters = run_async(main)
    if as_json:
        typer.echo(json.dumps([_dead_letter_json(letter) for letter in letters], indent=2))
        return
    if not console.is_terminal:  # piped: keep ids on one line
        console.width = max(console.width, 160)
    table = Table(
        Column("file id", min_width=36, overflow="fold"),
        Column("type", overflow="fold"),
        Column("error type", overflow="fold"),
        Column("message", ratio=1, min_width=16),
        "attempts",
        "first failure (UTC)",
        "last failure (UTC)",
        title=f"{topology.dead_letter_queue(str(stage.value))}: {len(letters)} message(s)",
    )
    for letter in letters:
        table.add_row(
            letter.file_id or "-",
            letter.event_type or "(not an event)",
            letter.error_type or "",
            letter.error_message or "",
            str(letter.attempts) if letter.attempts is not None else "",
            _when(letter.first_failed_at),
            _when(letter.last_failed_at),
        )
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    stage: Annotated[StageName, typer.Argument(help="The stage whose dead letters to replay.")],
    limit: Annotated[
        int | None, typer.Option(min=0, help="Replay at most this many (default: all).")
    ] = None,
) -> None:
    """Move STAGE's dead letters back to its work queue (attempts reset), oldest first.

    Each is acked from the dead-letter queue only after its copy is confirmed; messages that
    fail again during the replay are not replayed again.
    """
    settings = settings_from_env()
    topology = topology_of(settings)
    name = str(stage.value)
    progress = Progress(
        TextColumn("replaying {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task(topology.dead_letter_queue(name), total=None)

    def on_progress(done: int, planned: int) -> None:
        if not progress.live.is_started:  # only once the queue is known to exist
            progress.start()
        progress.update(task, completed=done, total=planned)

    async def main() -> ReplayResult:
        connection = await broker.connect(settings.amqp)
        try:
            return await replay(
                connection,
                topology,
                name,
                limit=limit,
                settings=settings.amqp,
                on_progress=on_progress,
            )
        finally:
            progress.stop()
            await connection.close()

    result = run_async(main)
    console.print(
        f"replayed {result.replayed} of {result.depth_at_start} dead letter(s) from "
        f"{topology.dead_letter_queue(name)} to {topology.queue(name)}"
    )


def health(
    target: Annotated[HealthTarget, typer.Argument(help="gateway, or a stage name.")],
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Port of its health endpoint (gateway: SLUICE_GATEWAY_PORT)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address of the process.")] = "127.0.0.1",
    timeout_s: Annotated[float, typer.Option(min=0.1, help="Longest wait, seconds.")] = 5.0,
) -> None:
    """Ask a process's /readyz: exit 0 if TARGET is ready there, 1 if not or unreachable.

    For a stage, the worker's health port (where `serve_health` listens) is required; the
    answer names each stage that process runs, so one `sluice run` can be asked per stage.
    """
    import httpx

    name = str(target.value)
    if port is None:
        if name != "gateway":
            raise typer.BadParameter("required for a stage", param_hint="--port")
        port = load(GatewaySettings).port
    url = f"http://{host}:{port}/readyz"
    try:
        response = httpx.get(url, timeout=timeout_s)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        console.print(f"{name}: unreachable ({url}: {exc!r})")
        raise typer.Exit(1) from None
    if name == "gateway":
        ready = response.status_code == 200
        detail = json.dumps(body.get("checks", body)) if isinstance(body, dict) else str(body)
    else:
        stages = body.get("stages", {}) if isinstance(body, dict) else {}
        ready = stages.get(name) == "ready"
        detail = "not served at this port" if name not in stages else str(stages[name])
    console.print(f"{name}: {'ready' if ready else 'NOT ready'} ({detail})")
    if not ready:
        raise typer.Exit(1)


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


@spool_app.command("clean")
def spool_clean(
    older_than: Annotated[
        str, typer.Option(help="Only entries older than this (30s, 15m, 24h, 7d).")
    ] = "24h",
    dry_run: Annotated[bool, typer.Option(help="Show what would go; remove nothing.")] = False,
) -> None:
    """Remove stale spool entries: unfinished uploads, 503 tombstones, bytes of final or never
    recorded files. Bytes of files in flight or waiting in a dead-letter queue always stay."""
    from shared.db import FileStateReader, create_pool
    from shared.spoolclean import CleanReport, clean_spool

    settings = settings_from_env()
    threshold_s = parse_duration(older_than)

    async def main() -> CleanReport:
        pool = await create_pool(settings.database)
        try:
            return await clean_spool(
                settings.spool.dir,
                FileStateReader(pool),
                older_than_s=threshold_s,
                dry_run=dry_run,
            )
        finally:
            await pool.close()

    report = run_async(main)
    table = Table(
        "entry", "kind", "age", "size", "status", title="would remove" if dry_run else "removed"
    )
    for entry in report.removed:
        table.add_row(
            entry.name,
            entry.kind,
            f"{entry.age_s / 3600:.1f} h",
            str(entry.size_bytes),
            entry.status or "",
        )
    if report.removed:
        console.print(table)
    unknown = [e.name for e in report.kept if e.kind == "unknown"]
    console.print(
        f"{'would remove' if dry_run else 'removed'} {len(report.removed)}, kept {len(report.kept)}"
        + (f" (not Sluice's: {', '.join(unknown[:5])})" if unknown else "")
    )
