"""``sluice upstream add|list|remove``: upstream services that publish ``file.received``.

Each upstream gets a RabbitMQ user that may publish ``file.received`` to the ingress exchange
and nothing else, and a record of the owners it may name and the buckets its sources may be in
(``shared.adapters.upstreams``; docs/security.md). The password is printed once.
"""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote, urlsplit, urlunsplit

import typer
from rich.table import Table

from services.cli._common import console, run_async, settings_from_env
from shared.settings import Settings

upstream_app = typer.Typer(
    no_args_is_help=True, help="Upstream services: their RabbitMQ users and what they may name."
)


def _amqp_url_for(settings: Settings, name: str, password: str) -> str:
    """``SLUICE_AMQP_URL`` with the upstream's credentials in place of Sluice's."""
    parts = urlsplit(settings.amqp.url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(name, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@upstream_app.command("add")
def upstream_add(
    name: Annotated[str, typer.Argument(help="The upstream's name: its RabbitMQ user.")],
    owner: Annotated[
        list[str], typer.Option("--owner", help="An owner it may name (repeat for several).")
    ],
    bucket: Annotated[
        list[str],
        typer.Option("--bucket", help="A bucket its s3:// sources may be in (repeat)."),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create upstream NAME: a RabbitMQ user that may only publish file.received to the
    ingress exchange, for OWNERs, from BUCKETs. Prints its password once."""
    from services.gateway.keys import validate_owner
    from shared.adapters import db
    from shared.adapters.upstreams import NAME_PATTERN, BrokerUsers, UpstreamRecords
    from shared.ports import Upstream
    from shared.topology import Topology

    settings = settings_from_env()
    if not NAME_PATTERN.fullmatch(name):
        raise typer.BadParameter(
            "1-64 of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", param_hint="NAME"
        )
    owners = tuple(dict.fromkeys(validate_owner(o) for o in owner))
    buckets = tuple(dict.fromkeys(bucket))
    if settings.s3.bucket_name in buckets:
        raise typer.BadParameter(
            f"{settings.s3.bucket_name} is Sluice's own bucket: an upstream may not name it",
            param_hint="--bucket",
        )
    unknown = [b for b in buckets if b not in settings.s3.upstream_buckets]
    if unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown)} not in S3_UPSTREAM_BUCKETS (the buckets Sluice may read)",
            param_hint="--bucket",
        )
    users = BrokerUsers(
        settings.status.management_url, settings.amqp.url, Topology.of(settings.amqp)
    )

    async def main() -> str:
        pool = await db.create_pool(settings.database)
        try:
            records = UpstreamRecords(pool)
            await records.add(Upstream(name=name, owners=owners, buckets=buckets))
            try:
                return await users.create(name)
            except BaseException:
                await records.remove(name)  # no record without its user
                raise
        finally:
            await pool.close()

    password = run_async(main)
    url = _amqp_url_for(settings, name, password)
    topology = Topology.of(settings.amqp)
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "name": name,
                    "password": password,
                    "amqp_url": url,
                    "exchange": topology.ingress_exchange,
                    "routing_key": "file.received",
                    "owners": list(owners),
                    "buckets": list(buckets),
                }
            )
        )
        return
    console.print(f"upstream [bold]{name}[/bold] added; its password is shown only now:")
    typer.echo(f"  amqp url:    {url}")
    typer.echo(f"  exchange:    {topology.ingress_exchange}  (routing key file.received)")
    typer.echo(f"  user_id:     {name}  (set this AMQP property on every message)")
    typer.echo(f"  owners:      {', '.join(owners)}")
    typer.echo(f"  buckets:     {', '.join(buckets)}")


@upstream_app.command("list")
def upstream_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The active upstreams, with the owners and buckets they may name, and whether their
    RabbitMQ user exists."""
    from shared.adapters import db
    from shared.adapters.upstreams import BrokerUsers, UpstreamRecords
    from shared.ports import Upstream
    from shared.topology import Topology

    settings = settings_from_env()
    users = BrokerUsers(
        settings.status.management_url, settings.amqp.url, Topology.of(settings.amqp)
    )

    async def main() -> tuple[list[Upstream], set[str]]:
        pool = await db.create_pool(settings.database)
        try:
            upstreams = await UpstreamRecords(pool).active()
        finally:
            await pool.close()
        return upstreams, await users.exists([u.name for u in upstreams])

    upstreams, existing = run_async(main)
    if json_output:
        rows = [
            {
                "name": u.name,
                "owners": list(u.owners),
                "buckets": list(u.buckets),
                "created_at": u.created_at.isoformat() if u.created_at else None,
                "broker_user": u.name in existing,
            }
            for u in upstreams
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table("name", "owners", "buckets", "since", "RabbitMQ user")
    for u in upstreams:
        table.add_row(
            u.name,
            ", ".join(u.owners),
            ", ".join(u.buckets),
            f"{u.created_at:%Y-%m-%d %H:%M}" if u.created_at else "",
            "yes" if u.name in existing else "[red]missing[/red]",
        )
    console.print(table if upstreams else "no upstream services")


@upstream_app.command("remove")
def upstream_remove(
    name: Annotated[str, typer.Argument(help="The upstream to remove.")],
) -> None:
    """Remove upstream NAME: its RabbitMQ user is deleted (its connections closed), and its
    messages still in the ingress queue are refused from now on."""
    from shared.adapters import db
    from shared.adapters.upstreams import BrokerUsers, UpstreamRecords
    from shared.topology import Topology

    settings = settings_from_env()
    users = BrokerUsers(
        settings.status.management_url, settings.amqp.url, Topology.of(settings.amqp)
    )

    async def main() -> tuple[bool, bool]:
        pool = await db.create_pool(settings.database)
        try:
            recorded = await UpstreamRecords(pool).remove(name)
        finally:
            await pool.close()
        return recorded, await users.delete(name)

    recorded, deleted = run_async(main)
    if not recorded and not deleted:
        console.print(f"[red]no upstream {name!r}[/red]")
        raise typer.Exit(1)
    console.print(f"upstream {name} removed")
