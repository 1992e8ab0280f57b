"""``sluice gdpr erase --owner X`` and ``sluice gdpr export --owner X --out FILE.zip`` (seed 000:
GDPR; docs/gdpr.md)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from services.cli._common import console, run_async, settings_from_env

gdpr_app = typer.Typer(no_args_is_help=True, help="GDPR: erase or export an owner's data.")


def _default_requester() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@gdpr_app.command("erase")
def erase(
    owner: Annotated[str, typer.Option(help="The owner whose every byte and field goes.")],
    requested_by: Annotated[
        str | None, typer.Option(help="Who asked, kept in the receipt (default: cli:<user>).")
    ] = None,
    wait_s: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for the commit stage to remove the rows."),
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="The receipt as JSON.")] = False,
) -> None:
    """Erase every byte and every personal field of OWNER: objects, thumbnails, fallback rows,
    spool, dead letters, API keys, names and metadata in the history. Prints the receipt (also
    stored in gdpr_erasures); exit 1 if rows of the owner were still there after --wait-s."""
    from shared.ops.gdpr import ErasureReceipt, erase_owner

    settings = settings_from_env()
    errors = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("erasing {task.description}"),
        TextColumn("{task.completed} removed"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(step: str, done: int) -> None:
        if step not in tasks:
            tasks[step] = progress.add_task(step, total=None)
        progress.update(tasks[step], completed=done)

    async def main() -> ErasureReceipt:
        with progress:
            return await erase_owner(
                settings,
                owner,
                requested_by=requested_by or _default_requester(),
                wait_s=wait_s,
                on_progress=on_progress,
            )

    receipt = run_async(main)
    if as_json:
        print(json.dumps(receipt.as_json()))
    else:
        counts = ", ".join(f"{k}={v}" for k, v in receipt.counts.items())
        console.print(
            f"erasure {receipt.erasure_id} by {receipt.requested_by}, "
            f"{receipt.started_at.isoformat()} → {receipt.finished_at.isoformat()}: {counts}"
        )
    if not receipt.complete:
        errors.print(
            f"[red]{receipt.counts['rows_left']} row(s) of the owner still there after "
            f"{wait_s:g}s: is the commit stage running? Run the erasure again.[/red]"
        )
        raise typer.Exit(1)


@gdpr_app.command("export")
def export(
    owner: Annotated[str, typer.Option(help="The owner whose files and history to export.")],
    out: Annotated[Path, typer.Option(help="The zip file to write.")],
) -> None:
    """Write OWNER's files (every version's current bytes) and one JSON of all their metadata
    and history (metadata.json) into a zip, streamed in chunks, with a progress bar."""
    from shared.ops.gdpr import ExportSummary, export_owner

    settings = settings_from_env()
    errors = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("exporting {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    )
    task = progress.add_task(owner, total=None)

    def on_progress(done_bytes: int, total_bytes: int) -> None:
        progress.update(task, completed=done_bytes, total=total_bytes)

    async def main() -> ExportSummary:
        with progress:
            return await export_owner(settings, owner, out, on_progress=on_progress)

    summary = run_async(main)
    console.print(
        f"{out}: {summary.files} file(s), {summary.versions} version(s), "
        f"{summary.bytes_written} bytes of originals, {summary.missing} missing"
    )
