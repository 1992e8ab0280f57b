"""``sluice doctor [--older-than D] [--limit N] [--json]``: files stuck on their way, and where.

Lists the files one of whose messages waits in a dead-letter queue, and the files not final
long after they were received (``shared.ops.doctor``). Exit 0 when there are none, 1 when there
are (so a cron job or a monitor can alert on it).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from services.cli._common import console, parse_duration, run_async, settings_from_env
from shared.adapters.db import create_pool
from shared.ops.doctor import StuckFile, stuck_files


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list | int | float | str | type(None)):
        return value
    return str(value)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def doctor(
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Not final this long after received: stuck (30s, 15m, 24h, 7d). "
            "Default: SLUICE_STATUS_STUCK_AFTER_S (15m)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Files to list, oldest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Files stuck on their way: a message of theirs in a dead-letter queue, or not final long
    after they were received; each with its last event and where it is. Exit 1 if any."""
    settings = settings_from_env()
    threshold_s = (
        settings.status.stuck_after_s if older_than is None else parse_duration(older_than)
    )

    async def main() -> list[StuckFile]:
        pool = await create_pool(settings.database)
        try:
            return await stuck_files(pool, threshold_s, limit)
        finally:
            await pool.close()

    found = run_async(main)
    if as_json:
        document = {
            "older_than_s": threshold_s,
            "stuck": [{k: _plain(v) for k, v in dataclasses.asdict(s).items()} for s in found],
        }
        typer.echo(json.dumps(document, indent=2))
    elif found:
        table = Table("file id", "owner", "name", "status", "age", "last event", "where")
        for stuck in found:
            table.add_row(
                str(stuck.file_id),
                stuck.owner,
                stuck.original_name,
                stuck.status,
                _age(stuck.age_s),
                stuck.last_event_type or "-",
                stuck.where,
            )
        console.print(table)
        console.print(f"{len(found)} stuck file(s) (not final after {_age(threshold_s)})")
    else:
        console.print(f"no stuck file (none waits in a dead-letter queue, none not final after "
                      f"{_age(threshold_s)})")  # fmt: skip
    if found:
        raise typer.Exit(1)
