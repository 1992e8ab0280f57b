"""``sluice upload FILE... [--follow] [--kind K] [--metadata JSON] [--version-of ID]``: upload
through the gateway and, with ``--follow``, watch each file through the pipeline.

Each FILE goes up through ``POST /v1/files`` (multipart, one at a time) with a byte progress
bar. Without ``--follow`` the file ids are printed, one per line (``<file_id>  <name>``), on
standard output. With ``--follow`` each accepted file's Server-Sent Events
(``GET /v1/files/{id}/events``, docs/uploads-progress.md) are read as they come, all files at
once, and shown stage by stage (received, scanned, stored, thumbnailed, committed); then a table
gives each file's final status (and why, for a rejection), and whether the SHA-256 the gateway
recorded, which S3 checked when it stored the bytes, is the local file's.

``--version-of ID`` uploads each FILE as the next version of the caller's file ID
(``POST /v1/files/{id}/versions``), one after the other, so they become versions n, n+1, …;
``--follow`` then follows each version's own events (``?version=n``) and reads its own status
(``GET /v1/files/{id}/versions/{n}``).

The gateway's URL and the API key come from ``--url``/``SLUICE_URL`` and
``--api-key``/``SLUICE_API_KEY``; the key is never printed. Exit code: 0 when every file was
accepted (and, with ``--follow``, ended ``available`` with a matching SHA-256), 1 otherwise,
2 for bad arguments.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from services.cli._common import run_async
from services.cli._follow import STAGES, Followed, follow_file
from shared.status import FileStatus

err_console = Console(stderr=True)
out_console = Console()


@dataclass
class Uploaded:
    """One FILE: its local SHA-256 and, once accepted, its id; or why it was refused."""

    path: Path
    sha256: str
    file_id: str | None = None
    version: int | None = None
    error: str | None = None
    followed: Followed = field(default_factory=Followed)


class _Counted(io.BufferedReader):
    """A file whose reads advance a progress bar (httpx reads the multipart part through
    ``read``, and takes its length from the file)."""

    def __init__(self, path: Path, progress: Progress, task: TaskID) -> None:
        super().__init__(io.FileIO(path))
        self._progress = progress
        self._task = task

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._progress.advance(self._task, len(chunk))
        return chunk


def parse_metadata(text: str | None) -> str | None:
    """``--metadata`` as given, once checked to be a JSON object.

    Raises:
        typer.BadParameter: not JSON, or JSON that is not an object (the message says which).
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(
            f"must be a JSON object, got {type(value).__name__}", param_hint="--metadata"
        )
    return text


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _error_text(answer: httpx.Response) -> str:
    try:
        error = answer.json()["error"]
        return f"{answer.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{answer.status_code}: {answer.text[:200]}"


async def upload_all(
    client: httpx.AsyncClient,
    paths: list[Path],
    fields: dict[str, str],
    version_of: str | None = None,
) -> list[Uploaded]:
    """Upload ``paths`` one after the other, with a byte progress bar on standard error: as
    new files, or as the next versions of file ``version_of``."""
    target = f"/v1/files/{version_of}/versions" if version_of else "/v1/files"
    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
    ) as progress:
        for path in paths:
            result = Uploaded(path, await asyncio.to_thread(_sha256, path))
            task = progress.add_task(path.name, total=path.stat().st_size)
            try:
                with _Counted(path, progress, task) as part:
                    answer = await client.post(
                        target, files={"file": (path.name, part)}, data=fields
                    )
            except httpx.HTTPError as exc:
                result.error = f"upload failed: {exc!r}"
            else:
                if answer.status_code == 202:
                    accepted = answer.json()
                    result.file_id = accepted["file_id"]
                    result.version = accepted["version_number"] if version_of else None
                else:
                    result.error = _error_text(answer)
            results.append(result)
    return results


async def follow_all(client: httpx.AsyncClient, results: list[Uploaded], timeout_s: float) -> None:
    """Follow every accepted file's events at once, a bar per file advancing stage by stage."""
    accepted = [r for r in results if r.file_id]
    with Progress(
        TextColumn("{task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=err_console,
    ) as progress:

        async def one(result: Uploaded) -> None:
            assert result.file_id is not None
            task = progress.add_task("waiting", total=len(STAGES), name=result.path.name)

            def seen(stage: str, detail: str | None) -> None:
                completed = STAGES.index(stage) + 1 if stage in STAGES else None
                text = stage + (f": {detail}" if detail and stage not in STAGES else "")
                progress.update(task, description=text, completed=completed)
                if not err_console.is_terminal:  # no live bars in a log: a line per stage
                    progress.console.print(f"{result.path.name}: {text}", highlight=False)

            result.followed = await follow_file(
                client, result.file_id, timeout_s, seen, version=result.version
            )

        await asyncio.gather(*(one(result) for result in accepted))


async def fetch_outcomes(client: httpx.AsyncClient, results: list[Uploaded]) -> None:
    """Fill in each followed file's final status, reason and recorded SHA-256
    (``GET /v1/files/{id}``, or ``…/versions/{n}`` for a version)."""
    for result in results:
        if result.file_id is None:
            continue
        url = f"/v1/files/{result.file_id}"
        if result.version is not None:
            url += f"/versions/{result.version}"
        answer = await client.get(url)
        if answer.status_code == 200:
            body: dict[str, Any] = answer.json()
            result.followed.status = body["status"]
            result.followed.reason = body.get("status_reason") or body.get("rejection_reason")
            result.followed.recorded_sha256 = body.get("sha256")
        elif result.followed.error is None:
            result.followed.error = _error_text(answer)


def _good(result: Uploaded) -> bool:
    followed = result.followed
    return followed.status == FileStatus.AVAILABLE and followed.recorded_sha256 == result.sha256


def render(results: list[Uploaded]) -> tuple[Table, bool]:
    """The outcome table, and whether every file is ``available`` with a matching SHA-256."""
    table = Table(title="sluice upload")
    versions = any(result.version is not None for result in results)
    for column in ("file", "file id", *(("version",) if versions else ()), "status", "SHA-256"):
        table.add_column(column)
    ok = True
    for result in results:
        followed = result.followed
        status = result.error or followed.error or followed.status or "unknown"
        if followed.reason:
            status += f": {followed.reason}"
        if followed.recorded_sha256 is None:
            checksum = "—"
        elif followed.recorded_sha256 == result.sha256:
            checksum = "match"
        else:
            checksum = "MISMATCH"
        good = _good(result)
        ok &= good
        colour = "green" if good else "red"
        version = (str(result.version or "—"),) if versions else ()
        table.add_row(
            str(result.path),
            result.file_id or "—",
            *version,
            f"[{colour}]{status}[/{colour}]",
            checksum,
        )
    return table, ok


def upload(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE", exists=True, dir_okay=False, readable=True, show_default=False
        ),
    ],
    follow: Annotated[
        bool, typer.Option("--follow", help="Follow each file to its final status.")
    ] = False,
    kind: Annotated[
        str | None, typer.Option(help="The files' kind (e.g. avatar, invoice).")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option(help="A JSON object kept with each file.", show_default=False)
    ] = None,
    version_of: Annotated[
        uuid.UUID | None,
        typer.Option(
            "--version-of",
            metavar="FILE_ID",
            help="Upload each FILE as the next version of this file of yours.",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str, typer.Option(envvar="SLUICE_URL", help="The gateway's base URL.")
    ] = "http://127.0.0.1:8080",
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_API_KEY",
            help="An upload API key (never printed).",
            show_default=False,
        ),
    ] = None,
    timeout_s: Annotated[
        float, typer.Option(min=1, help="Longest wait for all files to end, seconds.")
    ] = 300.0,
) -> None:
    """Upload FILE... through the gateway; with --follow, show each through the pipeline."""
    if not api_key:
        raise typer.BadParameter(
            "missing: pass --api-key or set SLUICE_API_KEY", param_hint="--api-key"
        )
    fields = {"kind": kind} if kind else {}
    if (checked := parse_metadata(metadata)) is not None:
        fields["metadata"] = checked

    async def main() -> bool:
        headers = {"Authorization": f"Bearer {api_key}"}
        # 60 s for every read, a stream's too: the gateway sends a keep-alive every 15 s, and a
        # stream silent for longer is resumed (Last-Event-ID) on a new connection.
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60.0) as client:
            of = str(version_of) if version_of else None
            results = await upload_all(client, files, fields, of)
            if not follow:
                for result in results:
                    if result.file_id:
                        number = f"  v{result.version}" if result.version else ""
                        out_console.print(
                            f"{result.file_id}{number}  {result.path}", highlight=False
                        )
                    else:
                        err_console.print(f"[red]{result.path}: {result.error}[/red]")
                return all(result.file_id for result in results)
            await follow_all(client, results, timeout_s)
            await fetch_outcomes(client, results)
        table, ok = render(results)
        if not out_console.is_terminal:
            out_console.width = max(out_console.width, 200)
        out_console.print(table)
        failed = len(results) - sum(1 for r in results if _good(r))
        if ok:
            out_console.print(f"[green]all {len(results)} available, SHA-256 match: exit 0[/green]")
        else:
            out_console.print(
                f"[red]{failed} of {len(results)} not available with a matching SHA-256: "
                "exit 1[/red]"
            )
        return ok

    if not run_async(main):
        raise typer.Exit(1)
