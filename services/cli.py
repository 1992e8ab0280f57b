"""The ``sluice`` command (Typer).

::

    sluice services up|down|status     start/stop the local RabbitMQ, PostgreSQL, SeaweedFS, clamd
    sluice migrate                     create the database if missing, apply migrations/
    sluice worker WORKER               run one consumer: scan, store, thumbnail, commit, fallback
    sluice gateway                     run the HTTP gateway
    sluice run                         every worker and the gateway in one process (development)
    sluice keys create NAME [--ops]    print a new API key (stored hashed); --ops: /ops only
    sluice events schemas [--check]    write (or check) docs/events/*.schema.json
    sluice dlq list|show|replay|purge  dead letters of every stage (services/cli_dlq.py)
    sluice health TARGET [--port N]    exit 0 when a process reports TARGET ready
    sluice spool clean [--older-than]  remove stale spool entries, never files in flight
    sluice reconcile [--fix] [--deep]  DB versions without objects, orphan objects
    sluice fallback status [--json]    what the S3-outage fallback holds, oldest first
    sluice status [--watch] [--json]   per stage: depth, in flight, dead letters, rates, p50/p95
    sluice demo                        quickstart: run it all, upload samples/, print a table
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from services.cli_dlq import dlq_app
from services.cli_fallback import fallback_app
from services.cli_ops import WorkerName, health, spool_app
from services.cli_reconcile import reconcile
from services.cli_status import status
from services.runtime import run_async, run_processes, settings_from_env, stop_on_signals
from shared import db
from shared.devservices import ServiceStatus
from shared.errors import SluiceError
from shared.events import json_schemas
from shared.logging import configure as configure_logging
from shared.settings import LogSettings
from shared.topology import WORKERS

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Sluice file-ingest pipeline.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys: one owner per key.")
services_app = typer.Typer(no_args_is_help=True, help="Local services for development and tests.")
events_app = typer.Typer(no_args_is_help=True, help="The event contract.")
app.add_typer(keys_app, name="keys")
app.add_typer(services_app, name="services")
app.add_typer(events_app, name="events")
app.add_typer(dlq_app, name="dlq")
app.add_typer(spool_app, name="spool")
app.add_typer(fallback_app, name="fallback")
app.command()(reconcile)
app.command()(health)
app.command()(status)
console = Console()
T = TypeVar("T")

EVENTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "events"


@app.command()
def migrate() -> None:
    """Create the database if it is missing and apply every pending migration."""
    settings = settings_from_env()
    created = run_async(lambda: db.ensure_database(settings.database))
    applied = db.migrate(settings.database)
    if created:
        console.print(f"created database {settings.database.url.rsplit('/', 1)[-1]}")
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'up to date'}")


@app.command()
def worker(stage: Annotated[WorkerName, typer.Argument(help="The worker to run.")]) -> None:
    """Run one worker until SIGTERM/SIGINT (in-flight messages finish first)."""
    settings = settings_from_env()

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_processes(settings, [str(stage.value)], gateway=False, stop=stop)

    run_async(main)


@app.command()
def gateway() -> None:
    """Run the HTTP gateway until SIGTERM/SIGINT."""
    settings = settings_from_env()

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_processes(settings, [], gateway=True, stop=stop)

    run_async(main)


@app.command("run")
def run_all(
    no_gateway: Annotated[bool, typer.Option("--no-gateway", help="Consumers only.")] = False,
) -> None:
    """Run every worker and the gateway in one process (development, quickstart)."""
    settings = settings_from_env()

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_processes(settings, list(WORKERS), gateway=not no_gateway, stop=stop)

    run_async(main)


@keys_app.command("create")
def keys_create(
    owner_argument: Annotated[
        str | None,
        typer.Argument(metavar="OWNER", help="Owner the key acts for.", show_default=False),
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="Owner the key acts for (same as OWNER).")
    ] = None,
    ops: Annotated[
        bool, typer.Option("--ops", help="An ops key: /ops routes only, no uploads.")
    ] = False,
) -> None:
    """Create an API key for OWNER and print it once (only its hash is stored).

    An upload key (the default) works on /v1 only; an --ops key on /ops only.
    """
    from services.gateway.keys import create_key

    if owner_argument and owner and owner_argument != owner:
        raise typer.BadParameter("give the owner once: OWNER or --owner", param_hint="OWNER")
    name = owner_argument or owner
    if not name:
        raise typer.BadParameter("missing: the owner the key acts for", param_hint="OWNER")
    settings = settings_from_env()

    async def main() -> str:
        pool = await db.create_pool(settings.database)
        try:
            return await create_key(pool, name, "ops" if ops else "upload")
        finally:
            await pool.close()

    typer.echo(run_async(main))


@services_app.command("up")
def services_up() -> None:
    """Start whatever of RabbitMQ, PostgreSQL, SeaweedFS and clamd is not running; wait."""
    from shared import devservices

    config = devservices.DevServicesConfig.from_env()
    with console.status("starting services…") as status:
        statuses = devservices.up(config, on_progress=lambda text: status.update(text))
    _print_services(statuses)


@services_app.command("down")
def services_down() -> None:
    """Stop the SeaweedFS and clamd this project started (never RabbitMQ or PostgreSQL)."""
    from shared import devservices

    devservices.down(devservices.DevServicesConfig.from_env())


@services_app.command("status")
def services_status() -> None:
    """Show each local service and whether it is healthy."""
    from shared import devservices

    statuses = devservices.status(devservices.DevServicesConfig.from_env())
    _print_services(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


def _print_services(statuses: Sequence[ServiceStatus]) -> None:
    table = Table("service", "address", "healthy", "started now", "detail")
    for s in statuses:
        table.add_row(
            s.name,
            s.address,
            "yes" if s.healthy else "NO",
            "yes" if s.started_by_us else "",
            s.detail,
        )
    console.print(table)


@events_app.command("schemas")
def events_schemas(
    out: Annotated[Path, typer.Option(help="Directory of the schema files.")] = EVENTS_DIR,
    check: Annotated[bool, typer.Option(help="Fail if the files are not current.")] = False,
) -> None:
    """Write the JSON Schema of every event to OUT (or, with --check, compare)."""
    stale = []
    for routing_key, schema in json_schemas().items():
        path = out / f"{routing_key}.schema.json"
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        console.print(f"stale schemas: {', '.join(stale)}; run `sluice events schemas`")
        raise typer.Exit(1)


@app.command()
def demo(
    samples: Annotated[Path, typer.Option(help="Files to upload.")] = Path("samples"),
    timeout_s: Annotated[float, typer.Option(help="Longest wait for all files.")] = 180.0,
) -> None:
    """The quickstart: services up, migrate, run everything, upload SAMPLES, print a table."""
    from services.demo import run_demo

    settings = settings_from_env()
    if "SLUICE_LOG_LEVEL" not in os.environ:  # the table tells the story; logs only on trouble
        configure_logging(LogSettings(format=settings.log.format, level="warning"))
    if not console.is_terminal:
        console.width = max(console.width, 200)
    ok = run_async(lambda: run_demo(settings, samples, timeout_s, console))
    if not ok:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point: a configuration error exits 2 with its message."""
    try:
        app()
    except SluiceError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        sys.exit(2)
