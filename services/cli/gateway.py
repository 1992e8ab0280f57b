"""``sluice gateway``: the HTTP gateway in its own process."""

from __future__ import annotations

from services.cli._common import serve


def gateway() -> None:
    """Run the HTTP gateway until SIGTERM/SIGINT."""
    serve([], gateway=True)
