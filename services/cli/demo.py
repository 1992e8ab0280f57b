"""The quickstart run: bring everything up, upload ``samples/`` over HTTP, show what happened.

It starts the local services (``shared.devservices``), migrates, runs every stage and the gateway
in this process, creates an API key, uploads each sample through ``POST /v1/files``, waits for
each to reach a final status, downloads each available original to compare its SHA-256 with the
local file, and prints one table row per file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli._common import console, run_async, settings_from_env
from shared import devservices
from shared.adapters import db
from shared.settings import LogSettings, Settings
from shared.status import FINAL, FileStatus
from shared.telemetry.logging import configure as configure_logging
from shared.topology import WORKERS

STAGE_EVENTS = ("file.scanned", "file.stored", "file.thumbnailed", "file.committed")


def expected_status(path: Path) -> FileStatus:
    """What the pipeline must make of a sample: EICAR files are rejected, the rest available."""
    if path.name.lower().startswith("eicar"):
        return FileStatus.REJECTED
    return FileStatus.AVAILABLE


def sample_files(directory: Path) -> list[Path]:
    """The files to upload: everything in ``directory`` but its Markdown notes."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() != ".md")


def _stage_times(history: list[dict[str, Any]]) -> str:
    times = {row["type"]: datetime.fromisoformat(row["occurred_at"]) for row in history}
    start = times.get("file.received")
    if start is None:
        return "?"
    parts = []
    for event_type in ("file.scanned", "file.rejected", *STAGE_EVENTS[1:]):
        if event_type in times:
            ms = (times[event_type] - start).total_seconds() * 1000
            parts.append(f"{event_type.removeprefix('file.')} {ms:.0f}")
    return ", ".join(parts) + " ms"


async def _wait_http(client: httpx.AsyncClient, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/healthz")).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not come up")
        await asyncio.sleep(0.2)


async def run_demo(settings: Settings, samples: Path, timeout_s: float, console: Console) -> bool:
    """Run the quickstart; ``True`` when every sample ended as expected."""
    from services.cli._common import run_processes
    from services.gateway.keys import create_key

    files = sample_files(samples)
    if not files:
        console.print(f"[red]no files in {samples}[/red]")
        return False
    with console.status("starting services…") as status:
        statuses = await asyncio.to_thread(
            devservices.up,
            devservices.DevServicesConfig.from_env(),
            buckets=[settings.s3.bucket_name],
            on_progress=lambda text: status.update(text),
        )
    console.print("services: " + ", ".join(f"{s.name} ✓" for s in statuses if s.healthy))
    await db.ensure_database(settings.database)
    applied = await asyncio.to_thread(db.migrate, settings.database)
    console.print(f"migrations applied: {', '.join(applied) or 'up to date'}")

    stop = asyncio.Event()
    pipeline = asyncio.create_task(run_processes(settings, list(WORKERS), True, stop))
    base_url = f"http://{settings.gateway.host}:{settings.gateway.port}"
    try:
        pool = await db.create_pool(settings.database)
        try:
            api_key = await create_key(pool, "demo")
        finally:
            await pool.close()
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
            await _wait_http(client, 30)
            rows = await _upload_and_follow(client, files, timeout_s, console)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pipeline, 60)

    table = Table(title="Sluice quickstart", show_lines=True)
    for column in (
        "file",
        "status",
        "stage times (since received)",
        "S3 key",
        "SHA-256",
        "thumbnails",
    ):
        table.add_column(column)
    ok = True
    for path, row in rows:
        good = row["status"] == expected_status(path) and row["checksum"] != "MISMATCH"
        ok &= good
        colour = "green" if good else "red"
        table.add_row(
            path.name,
            f"[{colour}]{row['status']}[/{colour}]"
            + (f"\n{row['reason']}" if row["reason"] else ""),
            row["times"],
            row["key"],
            row["checksum"],
            row["thumbnails"],
        )
    console.print(table)
    console.print(
        "[green]all samples ended as expected[/green]" if ok else "[red]unexpected outcome[/red]"
    )
    return ok


async def _upload_and_follow(
    client: httpx.AsyncClient, files: list[Path], timeout_s: float, console: Console
) -> list[tuple[Path, dict[str, str]]]:
    ids: dict[Path, str] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        uploading = progress.add_task("uploading", total=len(files))
        for path in files:
            answer = await client.post("/v1/files", files={"file": (path.name, path.read_bytes())})
            if answer.status_code != 202:
                raise RuntimeError(
                    f"upload of {path.name} failed: {answer.status_code} {answer.text}"
                )
            ids[path] = answer.json()["file_id"]
            progress.advance(uploading)
        waiting = progress.add_task("processing", total=len(files))
        final: dict[Path, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(final) < len(files) and time.monotonic() < deadline:
            for path, file_id in ids.items():
                if path in final:
                    continue
                answer = await client.get(f"/v1/files/{file_id}")
                if answer.status_code == 200 and answer.json()["status"] in FINAL:
                    final[path] = answer.json()
                    progress.advance(waiting)
            await asyncio.sleep(0.25)

    rows = []
    for path in files:
        info = final.get(path)
        if info is None:
            rows.append(
                (
                    path,
                    {
                        "status": "timed out",
                        "reason": "",
                        "times": "",
                        "key": "",
                        "checksum": "",
                        "thumbnails": "",
                    },
                )
            )
            continue
        checksum = "—"
        if info["status"] == FileStatus.AVAILABLE:
            content = await client.get(f"/v1/files/{ids[path]}/content")
            local = hashlib.sha256(path.read_bytes()).hexdigest()
            checksum = (
                "match" if hashlib.sha256(content.content).hexdigest() == local else "MISMATCH"
            )
        thumbs = info.get("thumbnails") or []
        thumb_text = ", ".join(f"{t['width']}x{t['height']}" for t in thumbs)
        if info.get("thumbnail_error"):
            thumb_text = f"none: {info['thumbnail_error']}"
        rows.append(
            (
                path,
                {
                    "status": info["status"],
                    "reason": info.get("status_reason") or "",
                    "times": _stage_times(info.get("history", [])),
                    "key": info.get("object_key") or "— (not in bucket)",
                    "checksum": checksum,
                    "thumbnails": thumb_text or "— (not an image)",
                },
            )
        )
    return rows


def demo(
    samples: Annotated[Path, typer.Option(help="Files to upload.")] = Path("samples"),
    timeout_s: Annotated[float, typer.Option(help="Longest wait for all files.")] = 180.0,
) -> None:
    """The quickstart: services up, migrate, run everything, upload SAMPLES, print a table."""
    settings = settings_from_env()
    if "SLUICE_LOG_LEVEL" not in os.environ:  # the table tells the story; logs only on trouble
        configure_logging(LogSettings(format=settings.log.format, level="warning"))
    if not console.is_terminal:
        console.width = max(console.width, 200)
    ok = run_async(lambda: run_demo(settings, samples, timeout_s, console))
    if not ok:
        raise typer.Exit(1)
