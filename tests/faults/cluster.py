"""A Sluice deployment for fault tests: the gateway and each stage as its own OS process.

Every process can be killed (``SIGKILL``) and started again on its own, as in production, while
the test uploads files over HTTP. The cluster gets a fresh database, AMQP prefix, bucket and
spool, on the shared services or on the private RabbitMQ/PostgreSQL of
``tests/faults/private_services.py`` (for tests that restart those).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from services.gateway.keys import create_key
from shared import devservices
from shared.adapters import db
from shared.settings import DatabaseSettings
from tests.databases import fresh_database
from tests.e2e.pipeline import ROOT, _delete_topology, empty_bucket, free_port

#: The pipeline's stage workers (the ones the kill test kills); the purge worker (deleted files'
#: bytes) and the fallback run beside them.
WORKERS = ("scan", "store", "thumbnail", "commit")
PROCESSES = ("gateway", *WORKERS, "purge", "fallback")


@dataclass
class Cluster:
    """Seven processes (gateway, scan, store, thumbnail, commit, purge, fallback) under one test
    name.

    ``s3`` is a private SeaweedFS (``tests/faults/private_seaweedfs.py``) for a test that stops
    S3; by default the shared development one is used."""

    tmp: Path
    name: str
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    extra_env: dict[str, str] = field(default_factory=dict)
    s3: Any = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    health_ports: dict[str, int] = field(default_factory=dict)
    api_key: str = ""

    @property
    def prefix(self) -> str:
        return self.name

    @property
    def bucket(self) -> str:
        return f"sluice-{self.name.replace('_', '-')}"

    @property
    def database_url(self) -> str:
        return f"{self.postgres_url}/sluice_{self.name}"

    @property
    def spool_dir(self) -> Path:
        return self.tmp / "spool"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __post_init__(self) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "SLUICE_DATABASE_URL": self.database_url,
            "SLUICE_AMQP_URL": self.amqp_url,
            "SLUICE_AMQP_PREFIX": self.prefix,
            "SLUICE_AMQP_RETRY_BASE_DELAY_S": "0.5",
            "SLUICE_AMQP_RETRY_MAX_DELAY_S": "5",
            "SLUICE_AMQP_SHUTDOWN_TIMEOUT_S": "10",
            "S3_BUCKET_NAME": self.bucket,
            "SLUICE_SPOOL_DIR": str(self.spool_dir),
            "SLUICE_GATEWAY_PORT": str(self.port),
            "SLUICE_GATEWAY_METRICS_PORT": str(free_port()),
            "SLUICE_LOG_FORMAT": "json",
            **({"S3_ENDPOINT": self.s3.endpoint} if self.s3 is not None else {}),
            **self.extra_env,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Fresh database (migrated), topology, bucket and spool; an API key for ``alice``.

        Done in this process (``sluice migrate`` and ``sluice keys create`` would each cost a
        second of CPU to start; the e2e tests run them as commands)."""
        database = fresh_database(f"sluice_{self.name}", self.postgres_url)
        if self.s3 is None:
            devservices.up(buckets=[self.bucket])
            empty_bucket(self.bucket)
        else:
            self.s3.ensure_bucket(self.bucket)
        asyncio.run(_delete_topology(self.amqp_url, self.prefix))
        self.api_key = asyncio.run(_new_key(database, "alice"))

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "services", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"sluice {' '.join(args)} failed: {done.stderr[-2000:]}"
        return done.stdout

    def process_spec(self, name: str) -> tuple[list[str], dict[str, str], Path]:
        """What ``start(name)`` runs: the ``sluice`` arguments, the environment, the directory."""
        command = ["gateway"] if name == "gateway" else ["worker", name]
        env = dict(self.env)
        if name != "gateway":
            port = self.health_ports.setdefault(name, free_port())
            env["SLUICE_WORKER_HEALTH_PORT"] = str(port)
        return command, env, ROOT

    def start(self, name: str) -> None:
        """Start (or start again) one process; its output goes to ``<tmp>/<name>.log``."""
        command, env, cwd = self.process_spec(name)
        log = (self.tmp / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "services", *command],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=log,
        )
        self.starts[name] = self.starts.get(name, 0) + 1

    def start_all(self) -> None:
        for name in PROCESSES:
            self.start(name)
        self.wait_http()
        self.wait_ready()

    def wait_http(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            gateway = self.processes["gateway"]
            assert gateway.poll() is None, self.log_tail("gateway")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gateway not up: {self.log_tail('gateway')}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(sig)
        process.wait(30)

    def ready(self, name: str) -> bool:
        """Whether a worker's ``/readyz`` says its consumer is connected and registered."""
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.health_ports[name]}/readyz", timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def wait_for(self, condition: Callable[[], object], timeout_s: float, what: str) -> None:
        """Wait until ``condition()`` is true; fail at once if a process died, and after
        ``timeout_s`` seconds naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} died: {self.log_tail(name)}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.3)

    def wait_ready(
        self, names: tuple[str, ...] = (*WORKERS, "purge", "fallback"), timeout_s: float = 60
    ) -> None:
        """Wait until every named worker reports ready."""
        deadline = time.monotonic() + timeout_s
        while not all(self.ready(name) for name in names):
            assert time.monotonic() < deadline, {n: self.ready(n) for n in names}
            time.sleep(0.3)

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every process; their exit codes (0 = graceful)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = None
        return codes

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    # -- reading state -----------------------------------------------------------------------

    def s3_client(self) -> Any:
        """A botocore S3 client for the cluster's S3 (private or shared)."""
        return self.s3.client() if self.s3 is not None else devservices.s3_client()

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return list(conn.execute(query, params).fetchall())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=60
        )


async def _new_key(database: DatabaseSettings, owner: str) -> str:
    """An upload key for ``owner``, as ``sluice keys create --owner OWNER`` makes it."""
    pool = await db.create_pool(database)
    try:
        return await create_key(pool, owner)
    finally:
        await pool.close()
