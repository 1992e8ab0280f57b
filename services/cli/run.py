"""``sluice run``: every worker and the gateway in one process (development, quickstart)."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli._common import serve
from shared.topology import WORKERS


def run(
    no_gateway: Annotated[bool, typer.Option("--no-gateway", help="Consumers only.")] = False,
) -> None:
    """Run every worker and the gateway in one process (development, quickstart)."""
    serve(list(WORKERS), gateway=not no_gateway)
