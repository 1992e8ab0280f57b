"""``sluice fallback status``: what the S3-outage fallback holds in PostgreSQL, oldest first."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli._common import run_async, settings_from_env
from services.fallback.repository import FallbackEntry, FallbackRepository
from shared.adapters.db import create_pool
from shared.ports import FallbackSummary

fallback_app = typer.Typer(no_args_is_help=True, help="The Base64 fallback for S3 outages.")
console = Console()


def _json(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if not isinstance(value, int | str | type(None)) else value


@fallback_app.command("status")
def fallback_status(
    limit: Annotated[int, typer.Option(min=0, help="Rows to list, oldest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """How many versions and bytes sit in the fallback, and the oldest LIMIT of them.

    Exit code 0 whether or not anything waits; a row that failed to migrate shows its error.
    """
    settings = settings_from_env()

    async def main() -> tuple[FallbackSummary, list[FallbackEntry]]:
        repository = FallbackRepository(await create_pool(settings.database))
        try:
            return await repository.summary(), await repository.entries(limit)
        finally:
            await repository.close()

    summary, entries = run_async(main)
    if as_json:
        document = {
            **{k: _json(v) for k, v in dataclasses.asdict(summary).items()},
            "entries": [
                {k: _json(v) for k, v in dataclasses.asdict(entry).items()} for entry in entries
            ],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    oldest = summary.oldest.strftime("%Y-%m-%d %H:%M:%S") if summary.oldest else "-"
    console.print(
        f"{summary.versions} version(s), {summary.bytes} bytes in fallback"
        f" ({summary.stored_bytes} bytes on disk); oldest: {oldest}"
    )
    if not entries:
        return
    table = Table("since", "file id", "version", "owner", "bytes", "attempts", "reason / error")
    for entry in entries:
        table.add_row(
            entry.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(entry.file_id),
            str(entry.version_number),
            entry.owner,
            str(entry.size_bytes),
            str(entry.migration_attempts),
            entry.last_error or entry.reason,
        )
    console.print(table)
