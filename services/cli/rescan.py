"""``sluice rescan [--older-than-signature V] [--owner X] [--rate N] [--dry-run]``: scan stored
files again through the scan stage (``shared/ops/rescan.py``; docs/security.md § Rescans).

Exit status: 0 the requests are published (or, with ``--dry-run``, counted), 2 an error
(PostgreSQL or RabbitMQ unreachable, a publish not confirmed: run it again).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli._common import console, run_async, settings_from_env, topology_of
from services.gateway.keys import validate_owner
from shared.adapters.broker import Publisher, connect
from shared.adapters.db import create_pool
from shared.ops.rescan import RescanRun, RescanSelection, request_rescans, select_versions


def rescan(
    older_than_signature: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Only versions last scanned with a signature database numbered below V "
            "(clamd's number before the '/'; 'unknown' counts as older).",
        ),
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's files.")] = None,
    rate: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Requests published per second at most (the scan stage's "
            "pace: clamd scans about 95 files of 1 MiB a second on one connection).",
        ),
    ] = 20.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the versions; publish nothing.")
    ] = False,
) -> None:
    """Scan stored (available) files again with clamd's current signatures.

    A file found infected now is quarantined: its objects move to the _quarantine/ prefix,
    its status becomes quarantined with the signature, and the gateway answers 410 for it.
    """
    if owner is not None:
        owner = validate_owner(owner)
    selection = RescanSelection(owner=owner, older_than_signature=older_than_signature)
    settings = settings_from_env()

    async def main() -> RescanRun | int:
        pool = await create_pool(settings.database)
        try:
            rows = await select_versions(pool, settings.s3.bucket_name, selection)
        finally:
            await pool.close()
        if dry_run or not rows:
            return len(rows)
        connection = await connect(settings.amqp)
        try:
            publisher = await Publisher.create(connection, settings.amqp, topology_of(settings))
            progress = Progress(
                TextColumn("rescan requested"),
                MofNCompleteColumn(),
                BarColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=not console.is_terminal,
            )
            task = progress.add_task("rescan", total=len(rows))
            with progress:
                return await request_rescans(
                    rows,
                    publisher,
                    rate_per_s=rate,
                    on_progress=lambda done, total: progress.update(task, completed=done),
                )
        finally:
            await connection.close()

    outcome = run_async(main)
    if isinstance(outcome, int):
        verb = "would rescan" if dry_run else "rescan requested for"
        typer.echo(f"{verb} {outcome} version(s)")
        return
    typer.echo(
        f"rescan {outcome.rescan_id}: requested for {outcome.requested} version(s); the scan "
        "stage records each as file.rescanned or file.quarantined (GET /v1/files/{id})"
    )
