"""``sluice worker WORKER``: one consumer in its own process (production runs one per stage)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from services.cli._common import serve
from shared.topology import MIRROR, TRANSFORMS, WORKERS

WorkerName = StrEnum(  # type: ignore[misc]
    "WorkerName", {name: name for name in (*WORKERS, MIRROR, *TRANSFORMS)}
)


def worker(stage: Annotated[WorkerName, typer.Argument(help="The worker to run.")]) -> None:
    """Run one worker until SIGTERM/SIGINT (in-flight messages finish first)."""
    serve([str(stage.value)], gateway=False)
