"""A private RabbitMQ node for fault tests, :class:`PrivateRabbitMQ`, which they stop, kill and
restart without disturbing the machine's shared node. Its state directory, its configuration and
what was measured here (the quorum queue SIGKILL window, timings): ``private_services``'
docstring; started and removed by :func:`tests.faults.private_services.private_rabbitmq`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import IO

import structlog

from shared.devservices.processes import _POLL_S, _alive, _port_open, _signal_and_wait, _which
from shared.devservices.system import _check_amqp
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

_STATS_INTERVAL_MS = 500  # how often queues publish the counts list_queues shows (default 5 s)


class PrivateRabbitMQ:
    """A RabbitMQ node of our own: ``sluice-faults-<port>@localhost`` on 127.0.0.1:``port``.

    Ports are reserved when the object is made (``port`` or the first free one from 5673) and
    kept until :meth:`close`. ``state_dir`` is created and given to the ``rabbitmq`` user.

    Raises:
        PrivateServiceError: no free port, no RabbitMQ installed, or the state directory cannot
            be reached by the ``rabbitmq`` user (from :meth:`start`).
    """

    service = "rabbitmq"

    def __init__(self, state_dir: Path, *, port: int | None = None) -> None:
        bin_dir = _rabbitmq_bin_dir()
        self._server = str(bin_dir / "rabbitmq-server")
        self._ctl = str(bin_dir / "rabbitmqctl")
        self.state_dir = Path(state_dir).resolve()
        self._locks: list[IO[bytes]] = []
        self.port = self._reserve(port or 5673, exact=port is not None)
        try:
            self.dist_port = self._reserve(self.port + 20000, exact=False)
        except PrivateServiceError:
            self.close()
            raise
        self.node = f"sluice-faults-{self.port}@localhost"

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:<port>/`` (guest may log in from loopback only)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        """The node's own log."""
        return self.state_dir / "log" / f"{self.node}.log"

    @property
    def pid(self) -> int | None:
        """The node's beam.smp pid while it runs, else None."""
        try:
            pid = int((self.state_dir / "rabbitmq.pid").read_text(encoding="ascii").strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        mine = f"RABBITMQ_NODENAME={self.node}".encode() in environ
        return pid if mine and _alive(pid) else None

    def start(self, timeout_s: float = 60.0) -> float:
        """Start the node unless it already accepts AMQP logins; wait until it does.

        Returns the wall time taken, in seconds (≈ 6 to 8.5 s for a start, ≈ 0 when running).

        Raises:
            PrivateServiceError: rabbitmq-server failed, the node died while booting (the log's
                error lines and the crash dump's slogan are quoted), or no login in ``timeout_s``.
        """
        t0, launched_at = time.monotonic(), time.time()
        if _check_amqp(self.url) is None:
            return time.monotonic() - t0
        offset = _size(self.log_path)
        if self.pid is None:  # else it runs and is still booting (e.g. start_app): just wait
            self._prepare()
            self._run([self._server, "-detached"], timeout_s=timeout_s)
        crash = self.state_dir / "log" / "erl_crash.dump"
        seen_pid = False
        while (problem := _check_amqp(self.url)) is not None:
            alive = self.pid is not None
            seen_pid = seen_pid or alive
            crashed = crash.exists() and crash.stat().st_mtime >= launched_at - 1
            if (seen_pid and not alive) or crashed:
                raise self._error(f"died while booting ({problem})", offset)
            if time.monotonic() - t0 > timeout_s:
                raise self._error(f"no AMQP login after {timeout_s:.0f} s ({problem})", offset)
            time.sleep(_POLL_S)
        return self._done("started", t0)

    def stop(self, timeout_s: float = 60.0) -> float:
        """Stop the node and its Erlang VM (``rabbitmqctl shutdown``), SIGTERM/SIGKILL if that
        fails; nothing to do when it is not running. Returns the wall time taken, in seconds.

        Raises:
            PrivateServiceError: the node still answers on its port afterwards.
        """
        t0 = time.monotonic()
        if self.pid is None and not _port_open("127.0.0.1", self.port):
            return 0.0
        rc, output = self._run([self._ctl, "-n", self.node, "shutdown"], timeout_s, check=False)
        if (pid := self.pid) is not None:
            log.warning("private_service.shutdown_failed", service=self.service, output=output)
            if not _signal_and_wait(pid, signal.SIGTERM, timeout_s=15):
                _signal_and_wait(pid, signal.SIGKILL, timeout_s=10)
        self._wait_port_closed(t0 + timeout_s, f"rabbitmqctl shutdown exit {rc}: {output}")
        return self._done("stopped", t0)

    def kill(self) -> float:
        """SIGKILL the node: a crash. Messages the broker confirmed survive (quorum queue logs
        are fsynced), except in a quorum queue declared less than ~1 s before (see
        ``private_services``' docstring). Returns the wall time until the port closed, in seconds.

        Raises:
            PrivateServiceError: the node is not running.
        """
        t0 = time.monotonic()
        pid = self.pid
        if pid is None:
            raise PrivateServiceError(f"{self.node} is not running, nothing to kill", **self._ctx)
        _signal_and_wait(pid, signal.SIGKILL, timeout_s=10)
        self._wait_port_closed(t0 + 10, "killed")
        return self._done("killed", t0)

    def restart(self, timeout_s: float = 60.0) -> float:
        """:meth:`stop` then :meth:`start`: a real broker restart, durable queues and persistent
        messages survive. Returns the wall time taken, in seconds (≈ 10.5 to 13 s)."""
        t0 = time.monotonic()
        self.stop(timeout_s)
        self.start(timeout_s)
        return time.monotonic() - t0

    def stop_app(self) -> float:
        """Stop the RabbitMQ application, not the VM (``rabbitmqctl stop_app``): connections drop
        and the port closes. Returns the wall time taken, in seconds."""
        t0 = time.monotonic()
        self.ctl("stop_app")
        self._wait_port_closed(t0 + 30, "stop_app")
        return self._done("app_stopped", t0)

    def start_app(self, timeout_s: float = 60.0) -> float:
        """Start the application again after :meth:`stop_app`; wait for an AMQP login.
        Returns the wall time taken, in seconds."""
        t0 = time.monotonic()
        self.ctl("start_app", timeout_s=timeout_s)
        self.start(timeout_s)
        return self._done("app_started", t0)

    def ctl(self, *args: str, timeout_s: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> ARGS``; its output.

        Raises:
            PrivateServiceError: a non-zero exit (the output is quoted).
        """
        return self._run([self._ctl, "-n", self.node, *args], timeout_s=timeout_s)[1]

    def queues(self, prefix: str = "") -> dict[str, tuple[int, int]]:
        """``{queue name: (messages, consumers)}`` for queues of vhost ``/`` whose names start
        with ``prefix``; ``messages`` counts ready and unacknowledged. The counts are those the
        queues last published, up to 0.5 s old: poll for an expected value. A queue the node
        cannot count right now (e.g. a quorum queue without a leader) is left out.

        Raises:
            PrivateServiceError: rabbitmqctl failed or printed no JSON array.
        """
        output = self.ctl(
            "-q", "list_queues", "name", "messages", "consumers", "--formatter", "json"
        )
        start, end = output.find("["), output.rfind("]")
        try:
            rows = json.loads(output[start : end + 1]) if start >= 0 else None
        except json.JSONDecodeError:
            rows = None
        if not isinstance(rows, list):
            raise PrivateServiceError(f"list_queues printed no JSON: {output!r}", **self._ctx)
        result: dict[str, tuple[int, int]] = {}
        for row in rows:
            name, messages, consumers = row.get("name"), row.get("messages"), row.get("consumers")
            counted = isinstance(messages, int) and isinstance(consumers, int)
            if isinstance(name, str) and name.startswith(prefix) and counted:
                result[name] = (messages, consumers)
        return result

    def depths(self, prefix: str = "") -> dict[str, int]:
        """``{queue name: messages}`` (ready + unacknowledged), as :meth:`queues`."""
        return {name: counts[0] for name, counts in self.queues(prefix).items()}

    def consumers(self, prefix: str = "") -> dict[str, int]:
        """``{queue name: consumers}``, as :meth:`queues`."""
        return {name: counts[1] for name, counts in self.queues(prefix).items()}

    def close_connections(self, reason: str = "closed by a fault test") -> None:
        """Close every client connection (``rabbitmqctl close_all_connections``); the node stays
        up and robust clients reconnect."""
        self.ctl("close_all_connections", reason)

    def close(self) -> None:
        """Release the port reservations (the node itself is left as it is)."""
        for handle in self._locks:
            handle.close()
        self._locks.clear()

    # -- internals ---------------------------------------------------------------------------

    @property
    def _ctx(self) -> dict[str, str]:
        return {"service": self.service, "state_dir": str(self.state_dir)}

    def _reserve(self, preferred: int, *, exact: bool) -> int:
        port, handle = _reserve_port(preferred, exact=exact)
        self._locks.append(handle)
        return port

    def _prepare(self) -> None:
        """The state directory, its subdirectories and the node's configuration files, owned by
        the rabbitmq user; raises PrivateServiceError if that user cannot reach the directory."""
        _owned_dir(self.state_dir, "rabbitmq")
        _check_reachable(self.state_dir, "rabbitmq")
        files = {
            "rabbitmq.conf": (
                f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
                f"collect_statistics_interval = {_STATS_INTERVAL_MS}\n"
            ),
            "advanced.config": f"[{{rabbit, [{{quorum_tick_interval, {_STATS_INTERVAL_MS}}}]}}].\n",
            "rabbitmq-env.conf": "",
            "enabled_plugins": "",
        }
        for name, text in files.items():
            (self.state_dir / name).write_text(text, encoding="utf-8")
        for sub in ("mnesia", "log"):
            _owned_dir(self.state_dir / sub, "rabbitmq")
        for path in self.state_dir.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")

    def _env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **inherited,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.state_dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.state_dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.state_dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.state_dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.state_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.state_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.state_dir / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _run(self, command: list[str], timeout_s: float, *, check: bool = True) -> tuple[int, str]:
        cwd = self.state_dir if self.state_dir.is_dir() else Path("/")
        rc, output = _run_logged(
            _as_user("rabbitmq", command), self._env(), cwd, timeout_s, self.state_dir
        )
        if check and rc != 0:
            message = f"{' '.join(command)} exited {rc}: {output.strip()[-2000:]}"
            raise PrivateServiceError(message, **self._ctx)
        return rc, output

    def _wait_port_closed(self, deadline: float, what: str) -> None:
        while _port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise PrivateServiceError(f"{self.node} still listens ({what})", **self._ctx)
            time.sleep(_POLL_S)

    def _error(self, what: str, offset: int) -> PrivateServiceError:
        excerpt = _log_excerpt(self.log_path, offset)
        with (
            contextlib.suppress(OSError),
            (self.state_dir / "log" / "erl_crash.dump").open() as dump,
        ):
            head = [dump.readline().strip() for _ in range(4)]
            excerpt += "".join(f"\n  {line}" for line in head if line.startswith("Slogan"))
        return PrivateServiceError(
            f"{self.node} on 127.0.0.1:{self.port} {what}; see {self.log_path}{excerpt}",
            **self._ctx,
        )

    def _done(self, event: str, t0: float) -> float:
        elapsed = time.monotonic() - t0
        log.info(
            f"private_service.{event}",
            service=self.service,
            node=self.node,
            elapsed_ms=round(elapsed * 1e3),
        )
        return elapsed


def _rabbitmq_bin_dir() -> Path:
    """Where the real rabbitmq-server and rabbitmqctl scripts are (``/usr/lib/rabbitmq/bin`` on
    Debian, behind ``/usr/sbin``'s wrapper).

    Raises:
        PrivateServiceError: RabbitMQ is not installed.
    """
    found = _which("rabbitmq-server")
    candidates = [Path(found).resolve().parent] if found else []
    for bin_dir in [*candidates, Path("/usr/lib/rabbitmq/bin")]:
        if (bin_dir / "rabbitmq-server").is_file() and (bin_dir / "rabbitmqctl").is_file():
            return bin_dir
    raise PrivateServiceError("rabbitmq-server not found; install the rabbitmq-server package")
