"""``sluice migrate``: create the database if it is missing, apply ``migrations/``."""

from __future__ import annotations

from services.cli._common import console, run_async, settings_from_env
from shared.adapters import db


def migrate() -> None:
    """Create the database if it is missing and apply every pending migration."""
    settings = settings_from_env()
    created = run_async(lambda: db.ensure_database(settings.database))
    applied = db.migrate(settings.database)
    if created:
        console.print(f"created database {settings.database.url.rsplit('/', 1)[-1]}")
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'up to date'}")
