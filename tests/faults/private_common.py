"""What the private RabbitMQ and PostgreSQL of ``private_services`` share beyond what
``shared.devservices`` gives every local service (port reservations, stopping a process,
polling): commands run as the service's OS user and logged to ``<state_dir>/commands.log``
(:func:`_as_user`, :func:`_run_logged`), state directories that user can reach
(:func:`_owned_dir`, :func:`_check_reachable`), port reservations that raise this module's
error (:func:`_reserve_port`), log excerpts for error messages and the error type,
:class:`PrivateServiceError`. How and why: ``private_services``' docstring.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from shared.devservices.processes import _which, reserve_port
from shared.errors import ServiceStartError

_ERROR_LINE = re.compile(r"\[error\]|\b(ERROR|FATAL|PANIC)\b|error:|could not", re.IGNORECASE)


class PrivateServiceError(ServiceStartError):
    """A private RabbitMQ or PostgreSQL could not be started, stopped or queried.

    The message quotes the failing command's output or the service's log; ``context`` carries
    ``service`` and ``state_dir``.
    """


def _reserve_port(preferred: int, *, exact: bool) -> tuple[int, IO[bytes]]:
    """``shared.devservices.reserve_port``, raising PrivateServiceError."""
    try:
        return reserve_port(preferred, exact=exact)
    except ServiceStartError as exc:
        raise PrivateServiceError(str(exc)) from exc


def _as_user(user: str, command: list[str]) -> list[str]:
    """``command`` run as OS user ``user``: directly if we are that user, else through runuser.

    Raises:
        PrivateServiceError: we are neither root nor ``user``, or runuser is missing.
    """
    if pwd.getpwuid(os.geteuid()).pw_name == user:
        return command
    runuser = _which("runuser")
    if os.geteuid() != 0 or runuser is None:
        raise PrivateServiceError(
            f"a private {user} service must run as the {user!r} OS user: run the tests as root "
            f"(with runuser) or as {user}"
        )
    return [runuser, "-u", user, "--", *command]


def _owned_dir(path: Path, user: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, user, user)
    return path


def _check_reachable(path: Path, user: str) -> None:
    """Raises PrivateServiceError naming the first parent of ``path`` that ``user`` cannot
    enter (e.g. pytest's 0700 ``/tmp/pytest-of-root``)."""

    def can(test: str, target: Path) -> bool:
        command = _as_user(user, ["test", test, str(target)])
        return _run_logged(command, None, Path("/"), 30, None)[0] == 0

    if can("-w", path):
        return
    closed = next((p for p in reversed(path.parents) if not can("-x", p)), path)
    raise PrivateServiceError(
        f"{path} is not writable by the {user!r} OS user: {closed} is closed to it; use a "
        "directory it can reach, e.g. the default one in the system temp directory",
        service=user,
        state_dir=str(path),
    )


def _run_logged(
    command: list[str],
    env: dict[str, str] | None,
    cwd: Path,
    timeout_s: float,
    state_dir: Path | None,
) -> tuple[int, str]:
    """Run ``command``; (exit code, output). The output goes through a file rather than a pipe,
    which a daemon started by the command would inherit and hold open; it is appended to
    ``<state_dir>/commands.log`` too.

    Raises:
        PrivateServiceError: the command cannot be run or outlives ``timeout_s``.
    """
    with tempfile.TemporaryFile() as out:
        try:
            rc = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                timeout=timeout_s,
                check=False,
                start_new_session=True,
            ).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PrivateServiceError(f"{' '.join(command)} failed: {exc}") from exc
        out.seek(0)
        output = out.read().decode(errors="replace")
    if state_dir is not None and state_dir.is_dir():
        with (state_dir / "commands.log").open("a", encoding="utf-8") as record:
            stamp = time.strftime("%H:%M:%S")
            record.write(f"--- {stamp} {' '.join(command)} → exit {rc}\n{output}")
    return rc, output


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_excerpt(path: Path, offset: int, lines: int = 10) -> str:
    """What ``path`` got since byte ``offset``, for an error message: its first error lines
    (the cause usually comes first), else its last lines."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return " (no log)"
    written = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in written if _ERROR_LINE.search(line)]
    chosen = errors[:lines] if errors else written[-lines:]
    return "".join(f"\n  {line[:400]}" for line in chosen)
