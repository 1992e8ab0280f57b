"""``sluice health TARGET [--port N]``: a process's ``/readyz``; exit 0 when TARGET is ready."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from services.cli._common import console
from shared.settings import GatewaySettings, load
from shared.topology import TRANSFORMS, WORKERS

HealthTarget = StrEnum(  # type: ignore[misc]
    "HealthTarget", {name: name for name in (*WORKERS, *TRANSFORMS, "gateway")}
)


def health(
    target: Annotated[HealthTarget, typer.Argument(help="gateway, or a stage name.")],
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Port of its health endpoint (gateway: SLUICE_GATEWAY_PORT)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address of the process.")] = "127.0.0.1",
    timeout_s: Annotated[float, typer.Option(min=0.1, help="Longest wait, seconds.")] = 5.0,
) -> None:
    """Ask a process's /readyz: exit 0 if TARGET is ready there, 1 if not or unreachable.

    For a stage, the worker's health port (where `serve_health` listens) is required; the
    answer names each stage that process runs, so one `sluice run` can be asked per stage.
    """
    import httpx

    name = str(target.value)
    if port is None:
        if name != "gateway":
            raise typer.BadParameter("required for a stage", param_hint="--port")
        port = load(GatewaySettings).port
    url = f"http://{host}:{port}/readyz"
    try:
        response = httpx.get(url, timeout=timeout_s)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        console.print(f"{name}: unreachable ({url}: {exc!r})")
        raise typer.Exit(1) from None
    if name == "gateway":
        ready = response.status_code == 200
        detail = json.dumps(body.get("checks", body)) if isinstance(body, dict) else str(body)
    else:
        stages = body.get("stages", {}) if isinstance(body, dict) else {}
        ready = stages.get(name) == "ready"
        detail = "not served at this port" if name not in stages else str(stages[name])
        breaker = (body.get("breakers") or {}).get(name) or {}
        if breaker.get("dependency"):
            detail += f"; breaker {breaker.get('state')}: {breaker['dependency']} since "
            detail += f"{breaker.get('since')}, last error {breaker.get('last_error')}"

    console.print(f"{name}: {'ready' if ready else 'NOT ready'} ({detail})")
    if not ready:
        raise typer.Exit(1)
