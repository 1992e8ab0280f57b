"""Processes, ports and files: the lock that serialises ``up()`` and ``down()``, daemons spawned
in a session of their own with a pid file, stopping them, reserving free ports for instances of
one's own, running the commands that start the system daemons, and reading what a daemon logged
since its last start."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import structlog

from shared.devservices.config import DevServicesConfig
from shared.errors import ServiceStartError

log = structlog.get_logger(__name__)

T = TypeVar("T")

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_POLL_S = 0.2
_STOP_TIMEOUT_S = 15.0
_ERROR_LINE = re.compile(r"error|fatal|failed|panic|^[EF]\d{4} ", re.IGNORECASE)
_PORT_LOCKS = Path(tempfile.gettempdir()) / "sluice-private-ports"


@contextlib.contextmanager
def _locked(config: DevServicesConfig) -> Iterator[None]:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with open(config.state_dir / "devservices.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _spawn(
    command: list[str],
    *,
    log_path: Path,
    pid_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session (it outlives us), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    pid_path.write_text(f"{proc.pid}\n", encoding="ascii")
    log.info("devservice.spawned", command=command[0], pid=proc.pid, log=str(log_path))
    return proc


def _read_pid(pid_path: Path, program: str) -> int | None:
    """The pid in ``pid_path`` if that process is alive and runs ``program``, else None."""
    try:
        pid = int(pid_path.read_text(encoding="ascii").strip())
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except (OSError, ValueError):
        return None
    if Path(argv0.decode(errors="replace")).name != program or not _alive(pid):
        return None
    return pid


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited: reaped
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _terminate(pid: int, *, kill: bool = False) -> None:
    """SIGTERM, then SIGKILL after 15 s; with ``kill``, SIGKILL at once (a crash, no shutdown)."""
    first = [] if kill else [(signal.SIGTERM, _STOP_TIMEOUT_S)]
    for sig, wait_s in (*first, (signal.SIGKILL, 5.0)):
        if _signal_and_wait(pid, sig, wait_s):
            return


def _signal_and_wait(pid: int, sig: int, timeout_s: float) -> bool:
    """Send ``sig`` to ``pid`` and wait up to ``timeout_s`` seconds for it to end; whether it
    did."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)
    return True


def reserve_port(preferred: int = 20000, *, exact: bool = False) -> tuple[int, IO[bytes]]:
    """A port on 127.0.0.1 that nothing listens on, from ``preferred`` up (only it when
    ``exact``), and the open lock file that reserves it: an flock on
    ``<tmp>/sluice-private-ports/<port>.lock``, so that concurrent test sessions and workers
    never pick the same port for instances of their own. Closing the file ends the reservation.

    Raises:
        ServiceStartError: no free port among the 200 tried (or ``preferred``, when exact).
    """
    _PORT_LOCKS.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):
        _PORT_LOCKS.chmod(0o1777)  # any user's tests may reserve ports
    candidates = [preferred] if exact else range(preferred, min(preferred + 200, 65536))
    for port in candidates:
        handle = (_PORT_LOCKS / f"{port}.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        if _bindable(port):
            return port, handle
        handle.close()
    raise ServiceStartError(f"no free port from {preferred} (tried {len(candidates)})")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _require_local(name: str, url: str, default_port: int) -> None:
    host, port = _host_port(url, default_port)
    if host not in _LOCAL_HOSTS:
        raise ServiceStartError(
            f"{name} at {host}:{port} is not reachable and is not local, so it cannot be "
            "started from here",
            service=name,
        )


def _which(program: str) -> str | None:
    # /usr/sbin is not on every user's PATH, and clamd, rabbitmq-server live there.
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def _run(command: list[str], *, timeout_s: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(command, 127, "", str(exc))


def _raise_open_files_limit(wanted: int) -> None:
    """In a child about to start a daemon: raise its open-files limit (``RLIMIT_NOFILE``) to
    ``wanted``, or as far as the hard limit allows when we may not raise that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(wanted, hard)), hard))


def _run_start_command(
    name: str,
    command: list[str],
    log_dir: Path,
    *,
    open_files: int | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a command that starts a system daemon; its output goes to ``<log_dir>/<name>-start.log``
    rather than to pipes, which a daemon inheriting them would hold open (and us waiting).
    ``open_files``: the daemon's open-files limit, raised from ours (see
    :func:`_raise_open_files_limit`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path = log_dir / f"{name}-start.log"
    with open(out_path, "w+b") as out:
        try:
            returncode = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
                close_fds=True,
                cwd=cwd,
                preexec_fn=(lambda: _raise_open_files_limit(open_files)) if open_files else None,
            ).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceStartError(f"{name}: {' '.join(command)} failed: {exc}") from exc
        out.seek(0)
        output = out.read().decode(errors="replace").strip()
    log.info("devservice.start_command", service=name, command=command, rc=returncode)
    if returncode != 0 and "already running" not in output:
        raise ServiceStartError(
            f"{name}: {' '.join(command)} failed with exit code {returncode}: {output}",
            service=name,
        )


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a fresh loop in a worker thread, so that callers may
    themselves be inside a running event loop (e.g. an async test fixture)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _last_run(log_path: str) -> list[str]:
    """The non-blank lines a daemon wrote since its last start marker (see :func:`_spawn`)."""
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.rsplit("\n--- ", 1)[-1].splitlines() if line.strip()]


def _lost_bind_race(log_path: str) -> bool:
    return any("address already in use" in line.lower() for line in _last_run(log_path))


def _tail(log_path: str, lines: int = 8) -> str:
    """The lines worth quoting in an error: the last run's error lines, else its last lines."""
    output = _last_run(log_path)
    errors = [line for line in output if _ERROR_LINE.search(line)]
    last = (errors or output)[-lines:]
    return "\n  " + "\n  ".join(last) if last else ""
