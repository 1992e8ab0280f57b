"""A private PostgreSQL cluster for fault tests, :class:`PrivatePostgres`, which they stop, crash
and restart without disturbing the machine's shared server. Its state directory and timings:
``private_services``' docstring; created, started and removed by
:func:`tests.faults.private_services.private_postgres`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import psycopg
import structlog
from psycopg import sql

from shared.devservices.processes import _POLL_S
from shared.devservices.system import _check_postgresql
from tests.faults.private_common import (
    PrivateServiceError,
    _as_user,
    _check_reachable,
    _log_excerpt,
    _owned_dir,
    _reserve_port,
    _run_logged,
    _size,
)

log = structlog.get_logger(__name__)

StopMode = Literal["smart", "fast", "immediate"]


class PrivatePostgres:
    """A PostgreSQL cluster of our own on 127.0.0.1:``port`` (trust auth, user ``postgres``).

    Made by ``initdb`` of the newest ``/usr/lib/postgresql/<version>`` on the first
    :meth:`start`; the port (``port`` or the first free one from 5433) is reserved when the
    object is made and kept until :meth:`close`.

    Raises:
        PrivateServiceError: no free port or no PostgreSQL server binaries installed.
    """

    service = "postgresql"

    def __init__(self, state_dir: Path, *, port: int | None = None) -> None:
        self._bin = _postgres_bin_dir()
        self.state_dir = Path(state_dir).resolve()
        self.port, self._lock = _reserve_port(port or 5433, exact=port is not None)

    @property
    def server_url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>``, to which a database name is appended."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def url(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<database>``."""
        return f"{self.server_url}/{database}"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "postgresql.log"

    @property
    def running(self) -> bool:
        """Whether the postmaster of ``data_dir`` runs (``pg_ctl status``)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._pg_ctl("status", timeout_s=20)[0] == 0

    def start(self, timeout_s: float = 60.0) -> float:
        """Create the cluster if needed, start it (``pg_ctl start -w``) unless it runs, and wait
        for a login. After ``stop("immediate")`` this includes crash recovery.

        Returns the wall time taken, in seconds (≈ 0.25 s; ≈ 1.4 s with initdb).

        Raises:
            PrivateServiceError: initdb or pg_ctl failed (the log's error lines are quoted), or
                no login in ``timeout_s``.
        """
        t0 = time.monotonic()
        offset = _size(self.log_path)
        if not self.running:
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            wait = ["-w", "-t", str(int(timeout_s))]
            rc, output = self._pg_ctl("start", "-l", str(self.log_path), *wait, timeout_s=timeout_s)
            if rc != 0:
                raise self._error(f"pg_ctl start exited {rc}: {output.strip()}", offset)
        elif _check_postgresql(self.url()) is None:
            return time.monotonic() - t0
        while (problem := _check_postgresql(self.url())) is not None:
            if time.monotonic() - t0 > timeout_s:
                raise self._error(f"no login after {timeout_s:.0f} s ({problem})", offset)
            time.sleep(_POLL_S)
        return self._done("started", t0)

    def stop(self, mode: StopMode = "fast", timeout_s: float = 60.0) -> float:
        """Stop the server (``pg_ctl stop -m mode -w``); nothing to do when it is not running.

        ``fast`` rolls back open transactions and checkpoints; ``immediate`` is a crash (no
        checkpoint, WAL recovery at the next start); ``smart`` waits for clients to leave.
        Returns the wall time taken, in seconds.

        Raises:
            PrivateServiceError: pg_ctl failed or timed out.
        """
        t0 = time.monotonic()
        if not self.running:
            return 0.0
        offset = _size(self.log_path)
        wait = ["-w", "-t", str(int(timeout_s))]
        rc, output = self._pg_ctl("stop", "-m", mode, *wait, timeout_s=timeout_s)
        if rc != 0:
            raise self._error(f"pg_ctl stop -m {mode} exited {rc}: {output.strip()}", offset)
        return self._done(f"stopped_{mode}", t0)

    def restart(self, mode: StopMode = "fast", timeout_s: float = 60.0) -> float:
        """:meth:`stop` with ``mode`` then :meth:`start`; committed rows survive.
        Returns the wall time taken, in seconds."""
        t0 = time.monotonic()
        self.stop(mode, timeout_s)
        self.start(timeout_s)
        return time.monotonic() - t0

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def kill_connections(self, database: str | None = None) -> int:
        """Terminate every client session (of ``database`` only, if given) but our own; how
        many were terminated. The server stays up."""
        query = """
            SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
              AND (%(db)s::text IS NULL OR datname = %(db)s::text)
        """
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute(query, {"db": database}).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Release the port reservation (the server itself is left as it is)."""
        self._lock.close()

    # -- internals ---------------------------------------------------------------------------

    @property
    def _ctx(self) -> dict[str, str]:
        return {"service": self.service, "state_dir": str(self.state_dir)}

    def _initdb(self) -> None:
        _owned_dir(self.state_dir, "postgres")
        _check_reachable(self.state_dir, "postgres")
        socket_dir = _owned_dir(self.state_dir / "run", "postgres")
        options = "-U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync".split()
        command = [str(self._bin / "initdb"), "-D", str(self.data_dir), *options]
        rc, output = self._run(command, timeout_s=120)
        if rc != 0:
            raise PrivateServiceError(f"initdb exited {rc}: {output.strip()[-2000:]}", **self._ctx)
        settings = (
            f"\n# sluice private cluster\nport = {self.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{socket_dir}'\n"
        )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(settings)

    def _pg_ctl(self, *args: str, timeout_s: float) -> tuple[int, str]:
        """``pg_ctl -D data_dir ARGS`` as postgres; (exit code, output). ``timeout_s`` is pg_ctl's
        own wait; the process gets 10 s more."""
        command = [str(self._bin / "pg_ctl"), "-D", str(self.data_dir), *args]
        return self._run(command, timeout_s=timeout_s + 10)

    def _run(self, command: list[str], timeout_s: float) -> tuple[int, str]:
        cwd = self.state_dir if self.state_dir.is_dir() else Path("/")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return _run_logged(_as_user("postgres", command), env, cwd, timeout_s, self.state_dir)

    def _error(self, what: str, offset: int) -> PrivateServiceError:
        excerpt = _log_excerpt(self.log_path, offset)
        return PrivateServiceError(
            f"private PostgreSQL on 127.0.0.1:{self.port} {what}; see {self.log_path}{excerpt}",
            **self._ctx,
        )

    def _done(self, event: str, t0: float) -> float:
        elapsed = time.monotonic() - t0
        log.info(
            f"private_service.{event}",
            service=self.service,
            port=self.port,
            elapsed_ms=round(elapsed * 1e3),
        )
        return elapsed


def _postgres_bin_dir() -> Path:
    """``/usr/lib/postgresql/<newest version>/bin``, holding initdb and pg_ctl.

    Raises:
        PrivateServiceError: no PostgreSQL server is installed.
    """
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found = [p for p in found if p.parent.name.isdigit() and (p / "pg_ctl").is_file()]
    if not found:
        raise PrivateServiceError("no /usr/lib/postgresql/<version>/bin/initdb; install postgresql")
    return max(found, key=lambda p: int(p.parent.name))
