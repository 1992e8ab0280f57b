"""``sluice reconcile``: the database and the bucket checked against each other (seed 004).

::

    sluice reconcile [--report-only|--fix] [--deep] [--json] [--grace 1h]
                     [--delete-orphans-older-than DURATION] [--listing-order binary|segments]
    sluice reconcile --mirror [--json] [--grace 1h]

Safe from cron while the pipeline runs: it reads, deletes only orphans older than an explicit
DURATION (never shorter than the grace period), and with ``--fix`` marks the versions whose
original is missing or differs ``corrupted`` by publishing ``file.corrupted`` (seed 004; the
commit stage records it, the event id is deterministic). Exit status: 0 nothing found, 1
something found or deleted, 2 an error (a bad option, S3, PostgreSQL or, with ``--fix``,
RabbitMQ unreachable; a ``--fix`` whose publish was not confirmed, after the report). What is
checked and how: ``shared/ops/reconcile/`` (``report.py``, ``scan.py``, ``fix.py``) and
``docs/reconciliation.md``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from services.cli._common import parse_duration, run_async, settings_from_env, topology_of
from services.cli._mirror import reconcile_mirror
from shared.adapters.broker import Publisher, connect
from shared.adapters.db import create_pool
from shared.adapters.object_storage import open_object_storage
from shared.ops.reconcile import (
    Findings,
    FixResult,
    ListingOrder,
    ReconcileOptions,
    ReconcileReport,
    mark_corrupted,
)
from shared.ops.reconcile import reconcile as reconcile_storage

EXIT_FOUND = 1
EXIT_ERROR = 2
log = structlog.get_logger("sluice.reconcile")


def _duration(text: str, option: str) -> timedelta:
    try:
        return timedelta(seconds=parse_duration(text))
    except typer.BadParameter as exc:
        exc.param_hint = option
        raise


def reconcile(
    report_only: Annotated[
        bool,
        typer.Option(
            "--report-only/--fix",
            help="Report and change nothing (the default), or also mark every version whose "
            "original is missing or differs corrupted (publishes file.corrupted).",
        ),
    ] = True,
    deep: Annotated[
        bool,
        typer.Option("--deep", help="Re-read every stored original and compare its SHA-256."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    grace: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Objects younger than this are never orphans (a store may be in flight).",
        ),
    ] = "1h",
    delete_orphans_older_than: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Delete orphans older than this (at least --grace); never files in progress.",
        ),
    ] = None,
    listing_order: Annotated[
        ListingOrder,
        typer.Option(help="How the store orders its listing: binary (S3), segments (SeaweedFS)."),
    ] = ListingOrder.BINARY,
    max_findings: Annotated[
        int, typer.Option(min=1, help="Entries kept per kind of finding (counts stay exact).")
    ] = 10_000,
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror",
            help="Compare the bucket with the backup mirror (SLUICE_MIRROR_*) instead: "
            "missing, extra, different SHA-256.",
        ),
    ] = False,
) -> None:
    """Check the bucket against the database: missing objects and thumbnails, orphans, sizes
    (and SHA-256 with --deep); with --fix, mark the versions whose original is missing or
    differs corrupted. Exit 0 if consistent, 1 if something was found, 2 on error."""
    grace_td = _duration(grace, "--grace")
    if mirror:
        raise typer.Exit(_mirror_exit(grace_td, as_json))
    older = (
        _duration(delete_orphans_older_than, "--delete-orphans-older-than")
        if delete_orphans_older_than is not None
        else None
    )
    if older is not None and older < grace_td:
        raise typer.BadParameter(
            f"{delete_orphans_older_than} is shorter than the grace period ({grace}): objects "
            "that young may be stores in flight",
            param_hint="--delete-orphans-older-than",
        )
    options = ReconcileOptions(
        grace=grace_td,
        delete_orphans_older_than=older,
        deep=deep,
        listing_order=listing_order,
        max_findings=max_findings,
    )
    errors = Console(stderr=True)
    try:
        report, fixed = _run(options, errors, fix=not report_only)
    except Exception as exc:  # S3, PostgreSQL, configuration: cron must see 2, not a traceback
        errors.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    document = report_json(report, fixed)
    log.info("reconcile.done", **document["counts"], bucket=report.bucket)
    if fixed is not None:
        log.info("reconcile.fixed", **{k: v for k, v in document["fixed"].items() if k != "items"})
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        _print(report)
        if fixed is not None:
            _print_fixed(fixed, report)
    if fixed is not None and fixed.error is not None:
        errors.print(f"[red]error:[/red] --fix stopped: {fixed.error}")
        raise typer.Exit(EXIT_ERROR)
    if report.found:
        raise typer.Exit(EXIT_FOUND)


def _mirror_exit(grace: timedelta, as_json: bool) -> int:
    try:
        return reconcile_mirror(grace, as_json)
    except Exception as exc:  # S3 on either side: cron must see 2, not a traceback
        Console(stderr=True).print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        return EXIT_ERROR


def _run(
    options: ReconcileOptions, errors: Console, *, fix: bool
) -> tuple[ReconcileReport, FixResult | None]:
    settings = settings_from_env()
    database = settings.database.model_copy(
        update={"pool_max_size": max(2, settings.database.pool_max_size)}
    )
    progress = Progress(
        SpinnerColumn(),
        TextColumn("reconciling {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[listed]} objects listed, {task.fields[expected]} keys expected"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    )
    task = progress.add_task(settings.s3.bucket_name, total=None, listed=0, expected=0)

    def on_progress(listed: int, expected: int) -> None:
        progress.update(task, listed=listed, expected=expected)

    async def main() -> tuple[ReconcileReport, FixResult | None]:
        # With --fix the broker is reached first: an unreachable one fails before a long run.
        connection = await connect(settings.amqp) if fix else None
        try:
            publisher = (
                await Publisher.create(connection, settings.amqp, topology_of(settings))
                if connection is not None
                else None
            )
            pool = await create_pool(database)
            try:
                async with open_object_storage(settings) as storage:
                    with progress:
                        report = await reconcile_storage(pool, storage, options, on_progress)
                if publisher is None:
                    return report, None
                return report, await mark_corrupted(report, pool, publisher.publish)
            finally:
                await pool.close()
        finally:
            if connection is not None:
                await connection.close()

    return run_async(main)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def report_json(report: ReconcileReport, fixed: FixResult | None = None) -> dict[str, Any]:
    """The report as one JSON document: ``bucket``, ``started_at``, ``finished_at`` (ISO 8601,
    UTC), ``options`` (durations in seconds), ``counts`` (each kind's total and the run's
    counters, ``shared.ops.reconcile.report.COUNTERS``), ``truncated`` (entries left out past
    ``--max-findings``), one list per kind: ``missing_objects``, ``missing_thumbnails``,
    ``orphans``, ``checksum_mismatches``, ``deleted``, and ``fixed`` (``null`` unless
    ``--fix``: ``total``, ``marked``, ``skipped``, ``failed``, ``left`` counts, ``error`` and
    ``items``, one per finding handled with ``outcome`` ``marked``/``skipped``/``failed``)."""
    options = report.options
    kinds = report.kinds()
    document: dict[str, Any] = {
        "bucket": report.bucket,
        "started_at": _plain(report.started_at),
        "finished_at": _plain(report.finished_at),
        "options": {
            "grace_s": _plain(options.grace),
            "delete_orphans_older_than_s": _plain(options.delete_orphans_older_than),
            "deep": options.deep,
            "listing_order": str(options.listing_order),
        },
        "counts": {**{name: found.total for name, found in kinds.items()}, **report.counts},
        "truncated": any(len(found.items) < found.total for found in kinds.values()),
    }
    for name, found in kinds.items():
        document[name] = [_item(item) for item in found.items]
    document["fixed"] = None if fixed is None else _fixed_json(fixed)
    return document


def _item(item: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(item, f.name)) for f in fields(item)}


def _fixed_json(fixed: FixResult) -> dict[str, Any]:
    outcomes = {"marked": fixed.marked, "skipped": fixed.skipped, "failed": fixed.failed}
    return {
        "total": fixed.total,
        **{name: len(items) for name, items in outcomes.items()},
        "left": fixed.left,
        "error": fixed.error,
        "items": [
            {"outcome": name, **_item(item)} for name, items in outcomes.items() for item in items
        ],
    }


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _table(title: str, found: Findings[Any], *columns: str) -> Table | None:
    if not found.total:
        return None
    shown = f" (first {len(found.items)})" if len(found.items) < found.total else ""
    headers = [Column(c, overflow="fold") if c == "key" else Column(c) for c in columns]
    return Table(*headers, title=f"{title}: {found.total}{shown}", title_justify="left")


def _print(report: ReconcileReport) -> None:
    console = Console()
    if not console.is_terminal:  # piped: keep keys on one line
        console.width = max(console.width, 200)
    tables = []
    if table := _table("missing objects", report.missing_objects, "file id", "v", "key", "status"):
        for m in report.missing_objects.items:
            table.add_row(str(m.file_id), str(m.version_number), m.key, m.status)
        tables.append(table)
    if table := _table(
        "missing thumbnails", report.missing_thumbnails, "file id", "v", "key", "size px", "status"
    ):
        for m in report.missing_thumbnails.items:
            table.add_row(str(m.file_id), str(m.version_number), m.key, str(m.size_px), m.status)
        tables.append(table)
    if table := _table(
        "checksum mismatches",
        report.checksum_mismatches,
        *("file id", "v", "key", "check", "expected", "actual"),
    ):
        for c in report.checksum_mismatches.items:
            expected, actual = (
                (c.expected_sha256, c.actual_sha256 or "")
                if c.check == "sha256"
                else (f"{c.expected_size_bytes} B", f"{c.actual_size_bytes} B")
            )
            table.add_row(str(c.file_id), str(c.version_number), c.key, c.check, expected, actual)
        tables.append(table)
    deleted = {orphan.key for orphan in report.deleted.items}
    for title, found in (("orphans", report.orphans), ("deleted orphans", report.deleted)):
        if table := _table(title, found, "key", "size", "age", "file status", "note"):
            for o in found.items:
                note = o.kept or ("deleted" if title == "orphans" and o.key in deleted else "")
                table.add_row(o.key, f"{o.size_bytes} B", _age(o.age_s), o.file_status or "", note)
            tables.append(table)
    for table in tables:
        console.print(table)
    counts = report.counts
    console.print(
        f"{report.bucket}: {counts['objects_listed']} objects ({counts['bytes_listed']} B), "
        f"{counts['keys_expected']} keys expected; {report.missing_objects.total} missing, "
        f"{report.missing_thumbnails.total} thumbnails missing, {report.orphans.total} orphans "
        f"({counts['young_objects_skipped']} younger than the grace period not counted), "
        f"{report.checksum_mismatches.total} mismatches"
        + (f" ({counts['deep_checked']} re-read)" if report.options.deep else "")
        + f", {report.deleted.total} deleted"
    )
    if counts["out_of_order_keys"]:
        other = {ListingOrder.BINARY: "segments", ListingOrder.SEGMENTS: "binary"}
        console.print(
            f"note: {counts['out_of_order_keys']} keys came out of {report.options.listing_order} "
            f"order; the report is right, but --listing-order "
            f"{other[report.options.listing_order]} may be faster"
        )


def _print_fixed(fixed: FixResult, report: ReconcileReport) -> None:
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 200)
    for outcome in fixed.skipped:
        console.print(f"not marked (skipped): {outcome.key}: {outcome.reason}", highlight=False)
    for outcome in fixed.failed:
        console.print(f"not marked (failed): {outcome.key}: {outcome.reason}", highlight=False)
    marked = len(fixed.marked)
    line = f"marked {marked} version(s) corrupted (file.corrupted published)"
    if fixed.left:
        listed = fixed.total - fixed.left
        line = f"marked {marked} of {fixed.total} version(s) corrupted"
        if fixed.error is None:
            line += (
                f"; only {listed} were listed (--max-findings "
                f"{report.options.max_findings}): run again once the commit stage has recorded "
                "these"
            )
        else:
            line += f"; stopped, {fixed.left} not attempted: run again"
    if fixed.skipped or fixed.failed:
        line += f"; {len(fixed.skipped)} skipped, {len(fixed.failed)} failed"
    console.print(line, highlight=False)
