"""``sluice keys create|list|revoke``: API keys, one owner and one scope per key, stored hashed.

``list`` never shows a secret, only its prefix and id; ``revoke`` takes the key, its id or a
prefix that names one key only (an ambiguous prefix is refused, its matches listed).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, cast

import typer
from rich.table import Table

from services.cli._common import console, run_async, settings_from_env
from services.gateway.keys import (
    SCOPES,
    ApiKeyInfo,
    Scope,
    create_key,
    find_keys,
    list_keys,
    revoke_key,
    validate_owner,
)
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


def key_table(keys: list[ApiKeyInfo], title: str | None = None) -> Table:
    """A table of ``keys``: prefix, id, owner, scope, created, revoked (never a secret)."""
    table = Table(title=title)
    for column in ("prefix", "key id", "owner", "scope", "created (UTC)", "revoked (UTC)"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(
            f"{key.key_prefix}…",
            str(key.key_id),
            key.owner,
            key.scope,
            f"{key.created_at:%Y-%m-%d %H:%M:%S}",
            f"{key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "—",
        )
    return table


@keys_app.command("list")
def keys_list(
    owner: Annotated[str | None, typer.Option(help="Only this owner's keys.")] = None,
    revoked: Annotated[
        bool, typer.Option("--revoked/--active", help="Include revoked keys (default: active).")
    ] = False,
) -> None:
    """List API keys, newest first: prefix, id, owner, scope, created, revoked.

    The secret is never shown (only its SHA-256 is stored). When a key was last used is not
    recorded: the gateway's access log has each request's key prefix.
    """
    if owner is not None:
        owner = validate_owner(owner)
    settings = settings_from_env()

    async def main() -> list[ApiKeyInfo]:
        pool = await db.create_pool(settings.database)
        try:
            return await list_keys(pool, owner, include_revoked=revoked)
        finally:
            await pool.close()

    keys = run_async(main)
    if not keys:
        typer.echo("no keys" + (f" for {owner}" if owner else ""))
        return
    console.print(key_table(keys))


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY|ID|PREFIX",
            help="The key, its key id, or the start of its prefix (slk_…) naming one key.",
        ),
    ],
) -> None:
    """Revoke one active key. An ambiguous prefix revokes nothing and lists its matches (exit 1).

    Gateways cache verified keys for SLUICE_GATEWAY_KEY_CACHE_TTL_S: the key stops working
    within that time, without a restart.
    """
    settings = settings_from_env()

    async def main() -> tuple[list[ApiKeyInfo], ApiKeyInfo | None]:
        pool = await db.create_pool(settings.database)
        try:
            matches = await find_keys(pool, key)
            if len(matches) != 1:
                return matches, None
            return matches, await revoke_key(pool, str(matches[0].key_id))
        finally:
            await pool.close()

    matches, revoked = run_async(main)
    if not matches:
        typer.echo(f"error: no active key matches {key[:12]!r}", err=True)
        raise typer.Exit(1)
    if revoked is None:
        typer.echo(
            f"error: {key[:12]!r} matches {len(matches)} active keys; nothing revoked. "
            "Give a longer prefix or the key id:",
            err=True,
        )
        console.print(key_table(matches))
        raise typer.Exit(1)
    ttl_s = settings.gateway.key_cache_ttl_s
    typer.echo(
        f"revoked {revoked.key_prefix}… (key id {revoked.key_id}, owner {revoked.owner}, "
        f"scope {revoked.scope}); gateways stop accepting it within {ttl_s:g} s "
        "(SLUICE_GATEWAY_KEY_CACHE_TTL_S)"
    )
