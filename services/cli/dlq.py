"""``sluice dlq``: the stages' dead letters: list, show, replay, purge (docs/deadletters.md).

::

    sluice dlq list   [STAGE] [filters] [--json]       what sits there (nothing moves)
    sluice dlq show   ID [--json]                      one message whole: headers, body, history
    sluice dlq replay [STAGE] [filters] [--limit N] [--rate PER_S] [--dry-run]
    sluice dlq purge  [STAGE] [filters] --reason TEXT --yes

Filters: ``--stage S`` (repeatable; the positional STAGE is the same), ``--error TYPE``,
``--older-than D`` (30s, 15m, 24h, 7d: last failure at least that old), ``--file-id ID``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, TypeVar

import typer
from aio_pika.abc import AbstractRobustConnection
from rich.console import Console
from rich.json import JSON
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from services.cli._common import parse_duration, run_async, settings_from_env, topology_of
from shared.adapters import broker
from shared.ops.deadletters import (
    DeadLetter,
    DeadLetterDetail,
    LetterRef,
    PurgeResult,
    ReplayResult,
    Selection,
    list_dead_letters,
    purge,
    replay,
    show_dead_letter,
)
from shared.settings import Settings
from shared.topology import DEAD_LETTER_STAGES

dlq_app = typer.Typer(
    no_args_is_help=True, help="Dead-letter queues: list, show, replay, purge (all stages)."
)
console = Console()
T = TypeVar("T")
StageName = StrEnum("StageName", {name: name for name in DEAD_LETTER_STAGES})  # type: ignore[misc]

StageArg = Annotated[
    StageName | None, typer.Argument(help="One stage (same as --stage); default: every stage.")
]
StagesOpt = Annotated[
    list[StageName] | None,
    typer.Option("--stage", "-s", help="Only this stage's dead letters (repeatable)."),
]
ErrorOpt = Annotated[
    str | None,
    typer.Option(
        "--error", help="Only this error type (e.g. SourceMissing, or RabbitMQ's delivery_limit)."
    ),
]
OlderOpt = Annotated[
    str | None, typer.Option(help="Only those whose last failure is this old (30s, 15m, 24h, 7d).")
]
FileOpt = Annotated[str | None, typer.Option(help="Only this file's dead letters (a UUID).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout instead of a table.")]


def _selection(
    stage: StageName | None,
    stages: Sequence[StageName] | None,
    error: str | None,
    older_than: str | None,
    file_id: str | None,
) -> Selection:
    chosen = [str(s.value) for s in (*(stages or ()), *((stage,) if stage else ()))]
    if file_id is not None:
        try:
            file_id = str(uuid.UUID(file_id))
        except ValueError:
            raise typer.BadParameter(f"{file_id!r} is not a UUID", param_hint="--file-id") from None
    return Selection(
        stages=tuple(s for s in DEAD_LETTER_STAGES if s in chosen)
        if chosen
        else DEAD_LETTER_STAGES,
        error_type=error,
        older_than_s=parse_duration(older_than) if older_than is not None else None,
        file_id=file_id,
    )


def _with_connection(
    settings: Settings, work: Callable[[AbstractRobustConnection], Awaitable[T]]
) -> T:
    async def main() -> T:
        connection = await broker.connect(settings.amqp)
        try:
            return await work(connection)
        finally:
            await connection.close()

    return run_async(main)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""


def _wide() -> None:
    if not console.is_terminal:  # piped: keep ids on one line
        console.width = max(console.width, 200)


def _letters_table(letters: Sequence[DeadLetter], title: str) -> Table:
    table = Table(
        Column("message id", min_width=36, overflow="fold"),
        Column("file id", min_width=36, overflow="fold"),
        "owner",
        "stage",
        Column("event type", overflow="fold"),
        Column("error type", overflow="fold"),
        Column("message", ratio=1, min_width=16),
        "attempts",
        "first failure (UTC)",
        "last failure (UTC)",
        title=title,
    )
    for letter in letters:
        table.add_row(
            letter.message_id or "-",
            letter.file_id or "-",
            letter.owner or "",
            letter.stage,
            letter.event_type or "(not an event)",
            letter.error_type or "",
            letter.error_message or "",
            str(letter.attempts) if letter.attempts is not None else "",
            _when(letter.first_failed_at),
            _when(letter.last_failed_at),
        )
    return table


def _refs_table(refs: Sequence[LetterRef], title: str) -> Table:
    table = Table("message id", "file id", "stage", "event type", "error type", title=title)
    for ref in refs:
        table.add_row(
            ref.message_id or "-",
            ref.file_id or "-",
            ref.stage,
            ref.event_type or "(not an event)",
            ref.error_type or "",
        )
    return table


def _progress(verb: str) -> tuple[Progress, Callable[[int, int, int], None]]:
    """A rich progress bar over the messages examined, and the callback that drives it."""
    progress = Progress(
        TextColumn(f"{verb} {{task.fields[done]}} of"),
        MofNCompleteColumn(),
        TextColumn("examined"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    )
    task = progress.add_task(verb, total=None, done=0)

    def on_progress(examined: int, total: int, done: int) -> None:
        if not progress.live.is_started:  # only once the queues are known to exist
            progress.start()
        progress.update(task, completed=examined, total=total, done=done)

    return progress, on_progress


@dlq_app.command("list")
def dlq_list(
    stage: StageArg = None,
    stages: StagesOpt = None,
    error: ErrorOpt = None,
    older_than: OlderOpt = None,
    file_id: FileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the dead letters, stage by stage, oldest first, without consuming or reordering them.

    Every listing adds one to each message's x-delivery-count (RabbitMQ counts the look as a
    delivery); nothing is ever dropped for it.
    """
    selection = _selection(stage, stages, error, older_than, file_id)
    settings = settings_from_env()
    topology = topology_of(settings)
    letters = _with_connection(settings, lambda c: list_dead_letters(c, topology, selection))
    if as_json:
        typer.echo(json.dumps([letter.as_json() for letter in letters], indent=2))
        return
    _wide()
    title = f"dead letters of {', '.join(selection.stages)}: {len(letters)} message(s)"
    console.print(_letters_table(letters, title))


@dlq_app.command("show")
def dlq_show(
    message_id: Annotated[str, typer.Argument(metavar="ID", help="Message id (the event id).")],
    as_json: JsonOpt = False,
) -> None:
    """Show one dead letter whole: properties, headers, body and history.

    The history lists its failures, replays and RabbitMQ's x-death entries. Exit 1 if no
    dead-letter queue holds it.
    """
    settings = settings_from_env()
    topology = topology_of(settings)
    found = _with_connection(settings, lambda c: show_dead_letter(c, topology, message_id))
    if found is None:
        typer.echo(f"no dead-letter queue holds a message with id {message_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(found.as_json(), indent=2))
        return
    _print_detail(found, topology.dead_letter_queue(found.letter.stage))


def _print_detail(found: DeadLetterDetail, queue: str) -> None:
    _wide()
    properties = Table("property", "value", title=f"{found.letter.message_id} in {queue}")
    for key, value in found.properties.items():
        properties.add_row(key, str(value))
    console.print(properties)
    headers = Table("header", Column("value", overflow="fold"), title="headers")
    for key, value in sorted(found.headers.items()):
        headers.add_row(key, value if isinstance(value, str) else json.dumps(value))
    console.print(headers)
    console.print("body:")
    if isinstance(found.body, str):
        console.print(found.body, markup=False)
    else:
        console.print(JSON.from_data(found.body))
    story = Table("at (UTC)", "event", Column("detail", overflow="fold"), title="history")
    for entry in found.history:
        rest = {k: v for k, v in entry.items() if k not in ("at", "event")}
        story.add_row(str(entry.get("at") or ""), entry["event"], json.dumps(rest))
    console.print(story)


@dlq_app.command("replay")
def dlq_replay(
    stage: StageArg = None,
    stages: StagesOpt = None,
    error: ErrorOpt = None,
    older_than: OlderOpt = None,
    file_id: FileOpt = None,
    limit: Annotated[
        int | None, typer.Option(min=0, help="Replay at most this many (default: all).")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="At most this many a second (default: no cap).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would move; move nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Move matching dead letters back to the stage they failed in, attempts reset, oldest first.

    Each is acked from its dead-letter queue only after its copy is confirmed, so a replay
    killed at any point loses nothing; the others keep their place. Messages that fail again
    during the replay are not replayed again.
    """
    selection = _selection(stage, stages, error, older_than, file_id)
    settings = settings_from_env()
    topology = topology_of(settings)
    progress, on_progress = _progress("replayed")
    try:
        result: ReplayResult = _with_connection(
            settings,
            lambda c: replay(
                c,
                topology,
                selection,
                settings=settings.amqp,
                limit=limit,
                rate_per_s=rate,
                dry_run=dry_run,
                on_progress=on_progress,
            ),
        )
    finally:
        progress.stop()
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    elif dry_run:
        _wide()
        title = f"would replay {len(result.letters)} of {result.depth_at_start} dead letter(s)"
        console.print(_refs_table(result.letters, title))
    else:
        console.print(
            f"replayed {result.replayed} dead letter(s) to their stage queues "
            f"({result.examined} examined of {result.depth_at_start})"
        )


@dlq_app.command("purge")
def dlq_purge(
    stage: StageArg = None,
    stages: StagesOpt = None,
    error: ErrorOpt = None,
    older_than: OlderOpt = None,
    file_id: FileOpt = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (recorded in each file's history); needed with --yes.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really remove them.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove matching dead letters for good, each recorded in its file's history.

    A file.dead_letter_purged event (stage, error, --reason) is confirmed before each message is
    acked away. Without --yes, show what would go and exit 2.
    """
    selection = _selection(stage, stages, error, older_than, file_id)
    if yes and not (reason and reason.strip()):
        raise typer.BadParameter("say why with --reason", param_hint="--reason")
    settings = settings_from_env()
    topology = topology_of(settings)
    if not yes:
        letters = _with_connection(settings, lambda c: list_dead_letters(c, topology, selection))
        _wide()
        console.print(_letters_table(letters, f"would purge {len(letters)} dead letter(s)"))
        typer.echo("nothing purged: add --yes (and --reason) to remove these", err=True)
        raise typer.Exit(2)
    assert reason is not None
    progress, on_progress = _progress("purged")
    try:
        result: PurgeResult = _with_connection(
            settings,
            lambda c: purge(
                c,
                topology,
                selection,
                settings=settings.amqp,
                reason=reason,
                on_progress=on_progress,
            ),
        )
    finally:
        progress.stop()
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    console.print(
        f"purged {result.purged} dead letter(s), {result.recorded} recorded in their file's "
        f"history ({result.purged - result.recorded} not valid events: logged only)"
    )
