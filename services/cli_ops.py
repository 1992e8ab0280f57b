"""The ops commands of ``sluice``: health checks and spool cleaning (dead letters:
``services/cli_dlq.py``).

::

    sluice health TARGET [--port N]       a process's /readyz: exit 0 when TARGET is ready
    sluice spool clean [--older-than D]   remove stale spool entries (never files in flight)
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.runtime import run_async, settings_from_env
from shared.settings import GatewaySettings, load
from shared.topology import WORKERS

spool_app = typer.Typer(no_args_is_help=True, help="The spool directory.")
console = Console()
WorkerName = StrEnum("WorkerName", {name: name for name in WORKERS})  # type: ignore[misc]
HealthTarget = StrEnum(  # type: ignore[misc]
    "HealthTarget", {name: name for name in (*WORKERS, "gateway")}
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
