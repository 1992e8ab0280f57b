"""``sluice run``: every worker and the gateway in one process (development, quickstart)."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli._common import serve
from shared.settings import MirrorSettings, load
from shared.topology import MIRROR, WORKERS


def run(
    no_gateway: Annotated[bool, typer.Option("--no-gateway", help="Consumers only.")] = False,
) -> None:
    """Run every worker and the gateway in one process (development, quickstart); the backup
    mirror too when SLUICE_MIRROR_ENABLED is set."""
    serve([*WORKERS, *([MIRROR] if load(MirrorSettings).enabled else [])], not no_gateway)
