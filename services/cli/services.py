"""``sluice services up|down|status``: the local RabbitMQ, PostgreSQL, SeaweedFS and clamd
(``shared.devservices``), for development and tests."""

from __future__ import annotations

from collections.abc import Sequence

import typer
from rich.table import Table

from services.cli._common import console
from shared import devservices
from shared.devservices import ServiceStatus

services_app = typer.Typer(no_args_is_help=True, help="Local services for development and tests.")


@services_app.command("up")
def services_up() -> None:
    """Start whatever of RabbitMQ, PostgreSQL, SeaweedFS and clamd is not running; wait."""
    config = devservices.DevServicesConfig.from_env()
    with console.status("starting services…") as status:
        statuses = devservices.up(config, on_progress=lambda text: status.update(text))
    _print_services(statuses)


@services_app.command("down")
def services_down() -> None:
    """Stop the SeaweedFS and clamd this project started (never RabbitMQ or PostgreSQL)."""
    devservices.down(devservices.DevServicesConfig.from_env())


@services_app.command("status")
def services_status() -> None:
    """Show each local service and whether it is healthy."""
    statuses = devservices.status(devservices.DevServicesConfig.from_env())
    _print_services(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


def _print_services(statuses: Sequence[ServiceStatus]) -> None:
    table = Table("service", "address", "healthy", "started now", "detail")
    for s in statuses:
        table.add_row(
            s.name,
            s.address,
            "yes" if s.healthy else "NO",
            "yes" if s.started_by_us else "",
            s.detail,
        )
    console.print(table)
