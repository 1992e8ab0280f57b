"""The ``sluice`` command (Typer): one module per command group, registered here.

::

    sluice services up|down|status     start/stop the local RabbitMQ, PostgreSQL, SeaweedFS, clamd
    sluice migrate                     create the database if missing, apply migrations/
    sluice worker WORKER               run one consumer: ingress, scan, store, thumbnail, commit,
                                       fallback
    sluice gateway                     run the HTTP gateway
    sluice run                         every worker and the gateway in one process (development)
    sluice upload FILE... [--follow]   upload through the gateway; follow each file's stages
    sluice keys create NAME [--scope]  print a new API key (stored hashed): upload (default),
                                       ops:read or ops:admin (/ops only)
    sluice keys list|revoke            keys by prefix and id (never the secret); revoke one
    sluice upstream add|list|remove    upstream services: RabbitMQ users for the ingress exchange
    sluice events schemas [--check]    write (or check) docs/events/*.schema.json
    sluice dlq list|show|replay|purge  dead letters of every stage
    sluice health TARGET [--port N]    exit 0 when a process reports TARGET ready
    sluice spool clean [--older-than]  remove stale spool entries, never files in flight
    sluice reconcile [--fix] [--deep]  DB versions without objects, orphan objects
    sluice rescan [--owner] [--rate]   scan stored files again; quarantine what is now infected
    sluice fallback status [--json]    what the S3-outage fallback holds, oldest first
    sluice status [--watch] [--json]   per stage: depth, in flight, dead letters, rates, p50/p95
    sluice doctor [--older-than D]     stuck files: in a dead-letter queue, or not final by now
    sluice gdpr erase|export --owner X erase every byte of an owner; export its files and history
    sluice demo                        quickstart: run it all, upload samples/, print a table

Each group lives in ``services/cli/<group>.py``; what several share (settings from the
environment, the asyncio entry point, signals, durations, running stages in this process) in
``services/cli/_common.py``.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from services.cli.demo import demo
from services.cli.dlq import dlq_app
from services.cli.doctor import doctor
from services.cli.events import events_app
from services.cli.fallback import fallback_app
from services.cli.gateway import gateway
from services.cli.gdpr import gdpr_app
from services.cli.health import health
from services.cli.keys import keys_app
from services.cli.migrate import migrate
from services.cli.reconcile import reconcile
from services.cli.rescan import rescan
from services.cli.run import run
from services.cli.services import services_app
from services.cli.spool import spool_app
from services.cli.status import status
from services.cli.upload import upload
from services.cli.upstream import upstream_app
from services.cli.worker import worker
from shared.errors import SluiceError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Sluice file-ingest pipeline.")
for name, group in (
    ("keys", keys_app),
    ("services", services_app),
    ("events", events_app),
    ("dlq", dlq_app),
    ("spool", spool_app),
    ("fallback", fallback_app),
    ("upstream", upstream_app),
    ("gdpr", gdpr_app),
):
    app.add_typer(group, name=name)
for command in (migrate, worker, gateway, run, upload, reconcile, health, status, doctor, demo):
    app.command()(command)
app.command()(rescan)


def main() -> None:
    """Console-script entry point: a configuration error exits 2 with its message."""
    try:
        app()
    except SluiceError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        sys.exit(2)
