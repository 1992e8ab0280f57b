"""PostgreSQL: connection pools (asyncpg) and schema migrations (yoyo-migrations).

Migrations are the plain SQL files in ``migrations/`` (``NNNN_name.sql`` with an optional
``NNNN_name.rollback.sql``), applied in order under yoyo's lock, so two processes migrating at
once do not race.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from yoyo import get_backend, read_migrations
from yoyo.backends import DatabaseBackend

from shared.erasure import owner_digest
from shared.errors import DatabaseUnavailable
from shared.events import BaseEvent
from shared.settings import DatabaseSettings
from shared.status import FileStatus

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

#: What "PostgreSQL is unreachable or went away" looks like from asyncpg: socket errors and
#: timeouts (``OSError``, ``TimeoutError``), a closed connection or pool (``InterfaceError``,
#: ``InternalClientError`` when a broken connection is reused), SQLSTATE class 08
#: (``PostgresConnectionError``), class 57 (``OperatorInterventionError``: admin shutdown,
#: "the database system is shutting down", cannot connect now) and class 53
#: (``InsufficientResourcesError``: too many connections). Callers turn these into
#: :class:`~shared.errors.DatabaseUnavailable`, which is retried.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


#: What "PostgreSQL refuses this value" looks like: SQLSTATE class 22 (``DataError``: invalid
#: text encoding, NUL in text (``CharacterNotInRepertoireError``), numeric out of range, bad
#: datetime) and a text asyncpg cannot encode to UTF-8 (a lone surrogate). The same value fails
#: the same way on every retry, so callers turn these into :class:`~shared.errors.InvalidData`,
#: a permanent error.
DATA_ERRORS: tuple[type[BaseException], ...] = (asyncpg.exceptions.DataError, UnicodeEncodeError)


async def _init_connection(connection: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await connection.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def keep_session(connection: asyncpg.Connection) -> None:
    """The pools' ``reset``: nothing to send back to PostgreSQL when a connection returns.

    asyncpg's default reset runs ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` at every release: one more round trip per transaction, which for the commit
    stage (one transaction per event) was about a tenth of its statements. Sluice's pooled
    connections keep no session state for it to clear: advisory locks are transaction-scoped
    (``pg_advisory_xact_lock``), cursors live inside their transaction, nothing runs ``SET``
    outside one, and the one ``LISTEN`` (``services.gateway.listener``) has its own connection.
    asyncpg still rolls back a transaction left open before this is called.
    """


async def create_pool(settings: DatabaseSettings) -> asyncpg.Pool:
    """A pool whose connections decode ``json``/``jsonb`` to Python objects and are given back
    without a reset query (:func:`keep_session`).

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached or refuses the login.
    """
    try:
        pool = await asyncpg.create_pool(
            settings.url,
            min_size=1,
            max_size=settings.pool_max_size,
            command_timeout=settings.command_timeout_s,
            init=_init_connection,
            reset=keep_session,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc!r}") from exc
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """``SELECT 1`` on a connection of ``pool``: PostgreSQL answers queries (the circuit-breaker
    probe of the stages that use it, ``shared.breaker``). A broken pooled connection that fails
    here is replaced by asyncpg, so the next probe uses a fresh one.

    Raises:
        DatabaseUnavailable: PostgreSQL refused or lost the connection, or is shutting down.
    """
    try:
        await pool.fetchval("SELECT 1")
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"PostgreSQL SELECT 1 failed: {exc!r}") from exc


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


async def ensure_database(settings: DatabaseSettings) -> bool:
    """Create the database named in ``settings.url`` if it does not exist; ``True`` if created.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    name = _database_name(settings.url)
    parts = urlsplit(settings.url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    try:
        connection = await asyncpg.connect(admin_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc!r}") from exc
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await connection.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await connection.close()


def migration_backend(settings: DatabaseSettings) -> DatabaseBackend:
    """yoyo's backend for the database of ``settings`` (through psycopg 3)."""
    url = settings.url
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            url = "postgresql+psycopg://" + url.removeprefix(scheme)
    return get_backend(url)


def migrate(settings: DatabaseSettings, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    backend = migration_backend(settings)
    migrations = read_migrations(str(migrations_dir))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


_VERSION_STATUS = """
SELECT CASE WHEN EXISTS (SELECT 1 FROM file_deletions WHERE file_id = $1)
              OR EXISTS (SELECT 1 FROM files WHERE file_id = $1 AND status = 'deleted')
            THEN 'deleted'
            ELSE (SELECT status FROM file_versions WHERE file_id = $1 AND version_number = $2)
       END
"""


#: Whether a file is deleted (``$4``: the status ``deleted``), waits for its deletion (a gateway
#: tombstone in ``file_deletions``) or belongs to an owner (``$2``: its digest) erased since it
#: was received (``$3``); ``$1`` the file id. The commit stage asks under the file's history
#: lock; the other stages ask when a file's source is gone (:class:`DeletedFileReader`).
FORGOTTEN = """
SELECT EXISTS (SELECT 1 FROM files WHERE file_id = $1 AND status = $4)
    OR EXISTS (SELECT 1 FROM file_deletions WHERE file_id = $1)
    OR EXISTS (SELECT 1 FROM gdpr_erasures WHERE owner_sha256 = $2 AND started_at >= $3)
"""


class DeletedFileReader:
    """The ``DeletedFiles`` port on PostgreSQL: whether a file was deleted or erased.

    A stage asks only when a file's source is gone, which is rare, so the pool is opened on the
    first question (at most ``max_size`` connections): a worker does not need PostgreSQL to
    start. Give ``pool`` to share a stage's own.
    """

    def __init__(
        self, settings: DatabaseSettings, pool: asyncpg.Pool | None = None, max_size: int = 2
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._owned = pool is None
        self._max_size = max_size
        self._opening = asyncio.Lock()

    async def forgotten(self, event: BaseEvent) -> bool:
        """True when ``event``'s file is deleted, waits for its deletion, or belongs to an
        owner erased since it was received (:data:`FORGOTTEN`).

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        try:
            pool = await self._open()
            value = await pool.fetchval(
                FORGOTTEN,
                event.file_id,
                owner_digest(event.owner),
                event.received_at,
                str(FileStatus.DELETED),
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"cannot read whether the file was deleted: {exc!r}", file_id=str(event.file_id)
            ) from exc
        return bool(value)

    async def close(self) -> None:
        """Close the pool this reader opened (not one it was given)."""
        if self._owned and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._settings.url,
                    min_size=0,
                    max_size=self._max_size,
                    command_timeout=self._settings.command_timeout_s,
                    reset=keep_session,
                )
            return self._pool


class FileStateReader:
    """Reads a file version's status (the ``FileStates`` port); the commit stage writes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def status(self, file_id: uuid.UUID, version_number: int) -> str | None:
        """The recorded status of the version, or ``None``; ``deleted`` for a file deleted or
        waiting for its deletion (docs/gdpr.md), whose versions are gone.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        try:
            value = await self._pool.fetchval(_VERSION_STATUS, file_id, version_number)
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"cannot read file state: {exc!r}", file_id=str(file_id)
            ) from exc
        return None if value is None else str(value)
