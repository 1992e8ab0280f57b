"""``sluice events schemas [--check]``: the JSON Schemas of the event contract in
``docs/events/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from services.cli._common import console
from shared.events import json_schemas

events_app = typer.Typer(no_args_is_help=True, help="The event contract.")
EVENTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "events"


@events_app.command("schemas")
def events_schemas(
    out: Annotated[Path, typer.Option(help="Directory of the schema files.")] = EVENTS_DIR,
    check: Annotated[bool, typer.Option(help="Fail if the files are not current.")] = False,
) -> None:
    """Write the JSON Schema of every event to OUT (or, with --check, compare)."""
    stale = []
    for routing_key, schema in json_schemas().items():
        path = out / f"{routing_key}.schema.json"
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        console.print(f"stale schemas: {', '.join(stale)}; run `sluice events schemas`")
        raise typer.Exit(1)
