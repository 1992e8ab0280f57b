"""``sluice reconcile --mirror``: the main store against the backup mirror
(``shared/ops/mirror.py``), printed as a table or one JSON document."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import typer
from rich.table import Table

from services.cli._common import console, run_async, settings_from_env
from shared.adapters.object_storage import open_object_storage
from shared.adapters.storage import S3ObjectStorage
from shared.ops.mirror import MirrorReport, compare_mirror


def reconcile_mirror(grace: timedelta, as_json: bool) -> int:
    """Compare, print, and return the exit status: 0 the same, 1 differences found.

    Raises:
        StorageUnavailable: either store unreachable.
    """
    settings = settings_from_env()

    async def main() -> MirrorReport:
        async with (
            open_object_storage(settings) as main_store,
            S3ObjectStorage(settings.mirror.s3(settings.s3)) as mirror,
        ):
            return await compare_mirror(main_store, mirror, grace=grace)

    report = run_async(main)
    counts = {kind: report.count(kind) for kind in ("missing", "extra", "checksum")}
    if as_json:
        document = {
            "main_bucket": report.main_bucket,
            "mirror_bucket": report.mirror_bucket,
            "compared": report.compared,
            "young_skipped": report.young_skipped,
            "counts": counts,
            "differences": [dataclasses.asdict(d) for d in report.differences],
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        console.print(
            f"{report.main_bucket} vs mirror {report.mirror_bucket}: {report.compared} keys "
            f"compared, {report.young_skipped} too young to expect; "
            + ", ".join(f"{n} {kind}" for kind, n in counts.items())
        )
        if report.differences:
            table = Table("key", "difference", "main SHA-256", "mirror SHA-256")
            for d in report.differences:
                table.add_row(d.key, d.kind, d.main_sha256 or "—", d.mirror_sha256 or "—")
            console.print(table)
    return 1 if report.differences else 0
