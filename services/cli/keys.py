"""``sluice keys create OWNER [--ops]``: API keys, one owner per key, stored hashed."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli._common import run_async, settings_from_env
from shared.adapters import db

keys_app = typer.Typer(no_args_is_help=True, help="API keys: one owner per key.")


@keys_app.command("create")
def keys_create(
    owner_argument: Annotated[
        str | None,
        typer.Argument(metavar="OWNER", help="Owner the key acts for.", show_default=False),
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="Owner the key acts for (same as OWNER).")
    ] = None,
    ops: Annotated[
        bool, typer.Option("--ops", help="An ops key: /ops routes only, no uploads.")
    ] = False,
) -> None:
    """Create an API key for OWNER and print it once (only its hash is stored).

    An upload key (the default) works on /v1 only; an --ops key on /ops only.
    """
    from services.gateway.keys import create_key

    if owner_argument and owner and owner_argument != owner:
        raise typer.BadParameter("give the owner once: OWNER or --owner", param_hint="OWNER")
    name = owner_argument or owner
    if not name:
        raise typer.BadParameter("missing: the owner the key acts for", param_hint="OWNER")
    settings = settings_from_env()

    async def main() -> str:
        pool = await db.create_pool(settings.database)
        try:
            return await create_key(pool, name, "ops" if ops else "upload")
        finally:
            await pool.close()

    typer.echo(run_async(main))
