"""RabbitMQ and PostgreSQL: daemons shared with the whole machine, checked by logging in and
started through the distribution's own commands; never stopped from here, except a local
RabbitMQ node that listens but no longer answers (restarted: :func:`_restart_wedged_rabbitmq`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import resource
import signal
import time
from pathlib import Path

import structlog

from shared.devservices.config import DevServicesConfig
from shared.devservices.processes import (
    _LOCAL_HOSTS,
    _host_port,
    _port_open,
    _require_local,
    _run,
    _run_async,
    _run_start_command,
    _which,
)
from shared.errors import ServiceStartError

log = structlog.get_logger(__name__)

#: The RabbitMQ plugins ops dashboards read: the management HTTP API and UI (port 15672; what
#: ``sluice status`` asks for queue depths and rates) and the Prometheus endpoint (port 15692).
RABBITMQ_PLUGINS = ("rabbitmq_management", "rabbitmq_prometheus")
_PLUGIN_PORTS = (15672, 15692)


#: The open-files limit a RabbitMQ node started from here gets (RabbitMQ's production advice;
#: capped by this process's hard limit), and the least a running local node may have before
#: it is restarted with it.
RABBITMQ_OPEN_FILES = 65536
RABBITMQ_MIN_OPEN_FILES = 16384

#: The quorum queue :func:`_check_amqp` declares and publishes to (one message at most).
PROBE_QUEUE = "sluice.devservices.probe"
_PROBE_S = 15.0


def _check_amqp(url: str) -> str | None:
    """None when RabbitMQ at ``url`` logs in, declares a quorum queue and confirms a persistent
    message to it within :data:`_PROBE_S` seconds (what every stage does first), else why not.

    A login alone is not enough: a node can accept connections while its quorum queues no
    longer answer (seen on RabbitMQ 3.10 after heavy quorum-queue churn)."""
    host, port = _host_port(url, 5672)
    if not _port_open(host, port):
        return f"nothing listens on {host}:{port}"

    async def probe() -> None:
        import aio_pika

        async with asyncio.timeout(_PROBE_S):
            connection = await aio_pika.connect(url, timeout=5)
            try:
                channel = await connection.channel(publisher_confirms=True)
                await channel.declare_queue(
                    PROBE_QUEUE,
                    durable=True,
                    arguments={"x-queue-type": "quorum", "x-max-length": 1},
                )
                await channel.default_exchange.publish(
                    aio_pika.Message(b"probe", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=PROBE_QUEUE,
                    mandatory=True,
                )
            finally:
                await connection.close()

    try:
        _run_async(probe)
    except TimeoutError:
        return f"no answer within {_PROBE_S:g} s to a login, quorum-queue declare and publish"
    except Exception as exc:
        return f"AMQP probe failed: {exc!r}"
    return None


def _start_rabbitmq(config: DevServicesConfig) -> None:
    _require_local("rabbitmq", config.amqp_url, 5672)
    diagnostics = _which("rabbitmq-diagnostics")
    if diagnostics and _run([diagnostics, "-q", "ping"], timeout_s=60).returncode == 0:
        return  # the node runs and is still opening its listeners: just wait
    server = _which("rabbitmq-server")
    if server is None:
        raise ServiceStartError("rabbitmq-server not found; install the rabbitmq-server package")
    command, home = _as_rabbitmq_user(server)
    _run_start_command(
        "rabbitmq", command, config.logs_dir, open_files=RABBITMQ_OPEN_FILES, cwd=home
    )


def _as_rabbitmq_user(server: str) -> tuple[list[str], Path | None]:
    """The command that starts the node detached, and the directory to run it in. Run as root,
    Debian's ``rabbitmq-server`` switches to the ``rabbitmq`` user with ``su``, whose PAM
    session sets the open-files limit back to the default (1024); ``setpriv`` switches without
    PAM, so the node keeps the limit this process gives it. Elsewhere, ``rabbitmq-server
    -detached`` as it is."""
    real = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    setpriv = _which("setpriv")
    if os.geteuid() != 0 or setpriv is None or not real.exists():
        return [server, "-detached"], None
    try:
        home = Path(pwd.getpwnam("rabbitmq").pw_dir)
    except KeyError:
        return [server, "-detached"], None
    switch = [setpriv, "--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups", "--reset-env"]
    return [*switch, str(real), "-detached"], home if home.is_dir() else None


def _listener_pid(port: int) -> int | None:
    """The pid of the process listening on local TCP ``port`` (``ss -ltnp``), or None.

    Other RabbitMQ nodes may run on the machine (the fault tests start private ones on other
    ports): the node is the one that listens on the configured port, not any ``beam.smp``."""
    output = _run(["ss", "-H", "-ltnp", f"sport = :{port}"], timeout_s=10).stdout
    found = re.search(r"pid=(\d+)", output)
    return int(found.group(1)) if found else None


def _rabbitmq_open_files(port: int = 5672) -> int | None:
    """The open-files limit (soft ``RLIMIT_NOFILE``) of the RabbitMQ node listening on local
    ``port``, or None when there is none or it cannot be read."""
    pid = _listener_pid(port)
    if pid is None:
        return None
    try:
        limits = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    for line in limits.splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    return None


def _check_rabbitmq_limits(config: DevServicesConfig) -> str | None:
    """Restart the local RabbitMQ node if it runs with fewer than
    :data:`RABBITMQ_MIN_OPEN_FILES` open files allowed; returns what was done, or None.

    RabbitMQ 3.10 takes a file handle from its own budget (``file_handle_cache``, sized from
    the limit) for every connection and its quorum queues take more: with the usual default of
    1024, a few hundred quorum queues (one test run's) exhaust it, and from then on every new
    AMQP connection waits forever in ``rabbit_networking:setup_socket`` (seen: the node answers
    ``rabbitmqctl ping`` and logs nothing). RabbitMQ's docs ask for 65536 in production."""
    host, port = _host_port(config.amqp_url, 5672)
    if host not in _LOCAL_HOSTS:
        return None
    limit = _rabbitmq_open_files(port)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limit is None or limit >= min(RABBITMQ_MIN_OPEN_FILES, hard):
        return None  # enough, or as much as a restart from here could give it
    problem = f"it runs with an open-files limit of {limit}"
    if not _restart_wedged_rabbitmq(config, problem):
        return None
    # The new node may not listen yet, so its limit cannot be read back here.
    return f"restarted: {problem}; started again asking for {RABBITMQ_OPEN_FILES}"


def _restart_wedged_rabbitmq(config: DevServicesConfig, problem: str) -> bool:
    """Restart the local RabbitMQ node that listens but does not answer (``problem``): stop it
    with ``rabbitmqctl stop`` (or, if that does not return in 60 s, kill its Erlang VM), then
    start it again. Messages in durable queues survive, as after any restart. Returns False,
    doing nothing, for a remote broker or one that cannot be stopped from here."""
    host, port = _host_port(config.amqp_url, 5672)
    ctl = _which("rabbitmqctl")
    if host not in _LOCAL_HOSTS or ctl is None:
        return False
    log.warning("devservice.rabbitmq_wedged", problem=problem, action="restart")
    pid = _listener_pid(port)
    if _run([ctl, "-q", "stop"], timeout_s=60).returncode != 0 and pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the node on our port only, never another one
        deadline = time.monotonic() + 30
        while _port_open(host, port) and time.monotonic() < deadline:
            time.sleep(0.5)
    _start_rabbitmq(config)
    return True


def _enable_rabbitmq_plugins(config: DevServicesConfig) -> str | None:
    """Enable :data:`RABBITMQ_PLUGINS` on the local, running node unless they are (idempotent).

    ``rabbitmq-plugins enable`` applies online and records them in the enabled-plugins file, so
    they stay on after a restart; it must run as the user that runs the node (root here). A
    remote broker is left alone. Returns None when the plugins are on, else why not (a
    missing plugin is no reason to refuse the rest of the services: ``sluice status`` falls back
    to AMQP and says so).
    """
    host, _ = _host_port(config.amqp_url, 5672)
    if host not in _LOCAL_HOSTS or all(_port_open(host, port) for port in _PLUGIN_PORTS):
        return None
    plugins = _which("rabbitmq-plugins")
    if plugins is None:
        return "rabbitmq-plugins not found"
    result = _run([plugins, "-q", "enable", *RABBITMQ_PLUGINS], timeout_s=120)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        return f"rabbitmq-plugins enable failed with exit code {result.returncode}: {output}"
    log.info("devservice.rabbitmq_plugins_enabled", plugins=RABBITMQ_PLUGINS)
    return None


def _check_postgresql(url: str) -> str | None:
    host, port = _host_port(url, 5432)
    if not _port_open(host, port):
        return f"nothing listens on {host}:{port}"
    if pg_isready := _which("pg_isready"):
        ready = _run([pg_isready, "-q", "-h", host, "-p", str(port)], timeout_s=10)
        if ready.returncode != 0:
            return f"pg_isready exit code {ready.returncode}"

    async def login() -> None:
        import asyncpg

        connection = await asyncpg.connect(url, timeout=5)
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    try:
        _run_async(login)
    except Exception as exc:
        return f"PostgreSQL login failed: {exc!r}"
    return None


def _pg_version() -> str | None:
    root = Path("/etc/postgresql")
    versions = [p.name for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return max(versions, key=int) if versions else None


def _pg_log() -> str:
    return f"/var/log/postgresql/postgresql-{_pg_version() or 'VER'}-main.log"


def _start_postgresql(config: DevServicesConfig) -> None:
    _require_local("postgresql", config.database_url, 5432)
    version = _pg_version()
    if version is None:
        raise ServiceStartError("no PostgreSQL cluster under /etc/postgresql; install postgresql")
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
    _run_start_command("postgresql", command, config.logs_dir)
