"""``sluice spool clean [--older-than D] [--dry-run]``: remove stale spool entries, never files
in flight, from the configured spool (``SLUICE_SPOOL_BACKEND``: the directory, or the S3
quarantine bucket)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from services.cli._common import console, parse_duration, run_async, settings_from_env

spool_app = typer.Typer(no_args_is_help=True, help="The spool (directory or S3 quarantine bucket).")


@spool_app.command("clean")
def spool_clean(
    older_than: Annotated[
        str, typer.Option(help="Only entries older than this (30s, 15m, 24h, 7d).")
    ] = "24h",
    dry_run: Annotated[bool, typer.Option(help="Show what would go; remove nothing.")] = False,
) -> None:
    """Remove stale spool entries: unfinished uploads, 503 tombstones, bytes of final or never
    recorded files. Bytes of files in flight, waiting in a dead-letter queue or whose event waits
    in the gateway's outbox always stay. With SLUICE_SPOOL_BACKEND=s3 the quarantine bucket is
    cleaned, and unfinished multipart uploads are aborted. Resumable (tus) uploads past their
    Upload-Expires are removed whatever --older-than says (never in a dry run)."""
    from shared.adapters.db import FileStateReader, create_pool
    from shared.adapters.outbox import EventOutbox
    from shared.adapters.resumable import clean_expired
    from shared.adapters.spools import open_spools
    from shared.ops.spoolclean import CleanReport, clean_quarantine, clean_spool

    settings = settings_from_env()
    threshold_s = parse_duration(older_than)

    async def main() -> CleanReport:
        outbox = EventOutbox(settings.spool.dir, settings.gateway.outbox_max_events)
        waiting = await outbox.waiting_sources()
        pool = await create_pool(settings.database)
        try:
            if settings.spool.backend == "s3":
                async with open_spools(settings) as spools:
                    return await clean_quarantine(
                        spools.quarantine,
                        FileStateReader(pool),
                        older_than_s=threshold_s,
                        dry_run=dry_run,
                        waiting=waiting,
                    )
            return await clean_spool(
                settings.spool.dir,
                FileStateReader(pool),
                older_than_s=threshold_s,
                dry_run=dry_run,
                waiting=waiting,
            )
        finally:
            await pool.close()

    report = run_async(main)

    async def expire_uploads() -> list[str]:
        async with open_spools(settings) as spools:
            return [] if dry_run else await clean_expired(spools.uploads)

    expired = run_async(expire_uploads)
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
        + (f"; {len(expired)} expired resumable uploads removed" if expired else "")
    )
