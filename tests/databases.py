"""A fresh, migrated test database: what the integration tests that own one start from."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

from shared.adapters import db
from shared.settings import DatabaseSettings

SERVER = "postgresql://postgres@127.0.0.1:5432"


def fresh_database(name: str, server: str = SERVER) -> DatabaseSettings:
    """Drop database ``name`` if it exists (closing its connections), create it, apply every
    migration; its settings. Synchronous: from async code, run it in a thread."""
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    settings = DatabaseSettings(url=f"{server}/{name}")
    asyncio.run(db.ensure_database(settings))
    db.migrate(settings)
    return settings
