"""The generic check / start / wait of one service: healthy is left alone, busy is given a
moment (then restarted, where the service knows how: a wedged local RabbitMQ), missing is
started and waited for, and a failure names the log to read."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from shared.devservices.config import ServiceStatus
from shared.devservices.processes import _POLL_S, _lost_bind_race, _port_open, _tail
from shared.errors import ServiceStartError

log = structlog.get_logger(__name__)

Progress = Callable[[str], None]

_BUSY_GRACE_S = 20.0  # how long a listening-but-unhealthy service may take to finish starting


@dataclass(frozen=True)
class _Service:
    name: str
    address: str
    check: Callable[[], str | None]  # None when healthy, else why not
    start: Callable[[], subprocess.Popen[bytes] | None]  # the process, when we spawn a daemon
    log_hint: str
    also_see: str = ""  # a second log worth reading
    shared: bool = False  # one per machine (RabbitMQ, PostgreSQL): never ours to stop
    managed_pid: Callable[[], int | None] = lambda: None
    forget_pid: Callable[[], None] = lambda: None
    # Restart it when it listens but stays unhealthy (given the problem); False when it cannot.
    recover: Callable[[str], bool] = lambda _problem: False


def _ensure(svc: _Service, timeout_s: float, progress: Progress) -> ServiceStatus:
    t0 = time.monotonic()

    def done(started: bool, detail: str) -> ServiceStatus:
        elapsed = time.monotonic() - t0
        progress(f"{svc.name}: {detail} at {svc.address} ({elapsed:.1f} s)")
        log.info("devservice.ready", service=svc.name, started=started, elapsed_ms=elapsed * 1e3)
        return ServiceStatus(
            svc.name, svc.address, True, started, detail, svc.managed_pid() is not None, elapsed
        )

    problem = svc.check()
    if problem is None:
        return done(False, "healthy")
    host, port = svc.address.rsplit(":", 1)
    if _port_open(host, int(port)) or svc.managed_pid() is not None:
        # Someone is there already, perhaps another up() still starting it: give it a moment.
        problem, _ = _wait_healthy(svc, t0 + min(timeout_s, _BUSY_GRACE_S), None)
        if problem is None:
            return done(False, "healthy")
        if svc.recover(problem):
            progress(f"{svc.name}: running but not answering ({problem}); restarted it")
            problem, _ = _wait_healthy(svc, time.monotonic() + timeout_s, None)
            if problem is None:
                return done(True, "restarted")
        managed = svc.managed_pid() is not None
        hint = " (it runs from this state_dir: down() stops it)" if managed else ""
        what = f"is running but not healthy{hint}: {problem}"
        raise _start_error(svc, what, log_is_its=managed or svc.shared, quote_log=False)
    progress(f"{svc.name}: not running ({problem}); starting it")
    proc = svc.start()
    problem, exited = _wait_healthy(svc, t0 + timeout_s, proc)
    if exited:
        svc.forget_pid()
        if problem is not None and _lost_bind_race(svc.log_hint):
            # Lost a start race to an up() with another state_dir: wait for the winner.
            problem, _ = _wait_healthy(svc, time.monotonic() + _BUSY_GRACE_S, None)
        if problem is not None:
            raise _start_error(svc, f"exited at start ({problem})")
        return done(False, "healthy")
    if problem is not None:
        raise _start_error(svc, f"not healthy after {timeout_s:.0f} s: {problem}")
    return done(True, "started")


def _wait_healthy(
    svc: _Service, deadline: float, proc: subprocess.Popen[bytes] | None
) -> tuple[str | None, bool]:
    """Poll until healthy or the deadline; returns (last problem or None, whether proc exited)."""
    while True:
        problem = svc.check()
        exited = proc is not None and proc.poll() is not None
        if problem is None or exited or time.monotonic() >= deadline:
            return problem, exited
        time.sleep(_POLL_S)


def _start_error(
    svc: _Service, what: str, *, log_is_its: bool = True, quote_log: bool = True
) -> ServiceStartError:
    """The error for ``svc``; names its log (and quotes the last run's errors) when that log
    belongs to the process that is failing, not to someone else's daemon on the same port."""
    message = f"{svc.name} at {svc.address} {what}"
    quote_log = quote_log and not svc.shared  # a machine-wide log holds everyone's errors
    if log_is_its and svc.log_hint:
        also = f" and {svc.also_see}" if svc.also_see else ""
        message += f"; see {svc.log_hint}{also}" + (_tail(svc.log_hint) if quote_log else "")
    return ServiceStartError(message, service=svc.name, address=svc.address, log=svc.log_hint)
