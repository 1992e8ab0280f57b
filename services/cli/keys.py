"""``sluice keys create OWNER [--scope upload|ops:read|ops:admin]``: API keys, one owner and one
scope per key, stored hashed."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, cast

import typer

from services.cli._common import run_async, settings_from_env
from services.gateway.keys import SCOPES, Scope, create_key
from shared.adapters import db

ScopeName = StrEnum("ScopeName", {name: name for name in SCOPES})  # type: ignore[misc]
DEFAULT_SCOPE = ScopeName("upload")

keys_app = typer.Typer(no_args_is_help=True, help="API keys: one owner and one scope per key.")


@keys_app.command("create")
def keys_create(
    owner_argument: Annotated[
        str | None,
        typer.Argument(metavar="OWNER", help="Owner the key acts for.", show_default=False),
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="Owner the key acts for (same as OWNER).")
    ] = None,
    scope: Annotated[
        ScopeName,
        typer.Option(
            help="upload: /v1 only. ops:read: /ops status and dead letters, no replay or purge. "
            "ops:admin: all of /ops.",
        ),
    ] = DEFAULT_SCOPE,
    ops: Annotated[
        bool, typer.Option("--ops", help="Deprecated: same as --scope ops:admin.", hidden=True)
    ] = False,
) -> None:
    """Create an API key for OWNER and print it once (only its hash is stored).

    An upload key (the default) works on /v1 only; ops:read and ops:admin keys on /ops only,
    and only ops:admin keys replay or purge dead letters.
    """
    if owner_argument and owner and owner_argument != owner:
        raise typer.BadParameter("give the owner once: OWNER or --owner", param_hint="OWNER")
    name = owner_argument or owner
    if not name:
        raise typer.BadParameter("missing: the owner the key acts for", param_hint="OWNER")
    chosen = cast(Scope, scope.value)
    if ops:
        if chosen not in ("upload", "ops:admin"):
            raise typer.BadParameter(
                f"--ops means --scope ops:admin, not {chosen}: give --scope alone",
                param_hint="--ops",
            )
        typer.echo("warning: --ops is deprecated; use --scope ops:admin", err=True)
        chosen = "ops:admin"
    settings = settings_from_env()

    async def main() -> str:
        pool = await db.create_pool(settings.database)
        try:
            return await create_key(pool, name, chosen)
        finally:
            await pool.close()

    typer.echo(run_async(main))
