"""clamd: Debian's daemon run with a config written below state_dir and the test signature
database shipped as ``shared/clamav/sluice-test.ndb``, checked by scanning the EICAR string."""

from __future__ import annotations

import importlib.resources
import subprocess
from importlib.resources.abc import Traversable
from pathlib import Path

from shared.devservices.config import DevServicesConfig
from shared.devservices.processes import _port_open, _spawn, _which
from shared.errors import ServiceStartError

_TEST_SIGNATURES = "sluice-test.ndb"


def eicar_bytes() -> bytes:
    """The 68-byte EICAR anti-virus test string, decoded from the shipped signature file
    ``shared/clamav/sluice-test.ndb`` (kept as hex so no source file carries it verbatim)."""
    line = _test_signatures().read_text(encoding="ascii").strip()
    _name, _target, _offset, hex_signature = line.split(":", 3)
    return bytes.fromhex(hex_signature)


def _test_signatures() -> Traversable:
    return importlib.resources.files("shared").joinpath("clamav", _TEST_SIGNATURES)


def _clamd_pid_path(config: DevServicesConfig) -> Path:
    return config.clamd_dir / "clamd.pid"


def _check_clamd(config: DevServicesConfig) -> str | None:
    import pyclamd

    if not _port_open("127.0.0.1", config.clamd_port):
        return f"nothing listens on 127.0.0.1:{config.clamd_port}"
    try:
        clamd = pyclamd.ClamdNetworkSocket("127.0.0.1", config.clamd_port, timeout=10.0)
        clamd.ping()
        verdict = clamd.scan_stream(eicar_bytes())
    except (OSError, ValueError) as exc:
        return f"clamd PING/INSTREAM failed: {exc!r}"
    found = (verdict or {}).get("stream")
    if not found or found[0] != "FOUND":
        return f"clamd answers but does not detect the EICAR test file: {verdict!r}"
    return None


def _clamd_conf(config: DevServicesConfig) -> str:
    d = config.clamd_dir
    return "\n".join(
        [
            "# Written by shared/devservices/clamd.py; rewritten on every start.",
            f"DatabaseDirectory {d / 'db'}",
            f"TemporaryDirectory {d / 'tmp'}",
            f"TCPSocket {config.clamd_port}",
            "TCPAddr 127.0.0.1",
            "Foreground yes",  # we detach it ourselves and keep its pid
            f"PidFile {_clamd_pid_path(config)}",
            f"LogFile {d / 'clamd.log'}",
            "LogTime yes",
            "LogRotate yes",
            "LogFileMaxSize 10M",
            # Sluice accepts images up to 10 MB and PDFs up to 5 MB (seed 000); leave headroom.
            f"StreamMaxLength {config.clamd_stream_max_mib}M",
            "MaxFileSize 64M",
            "MaxScanSize 256M",
            "",
        ]
    )


def _start_clamd(config: DevServicesConfig) -> subprocess.Popen[bytes]:
    clamd = _which("clamd")
    if clamd is None:
        raise ServiceStartError("clamd not found; install it with: apt-get install clamav-daemon")
    db_dir = config.clamd_dir / "db"
    for directory in (db_dir, config.clamd_dir / "tmp"):
        directory.mkdir(parents=True, exist_ok=True)
    (db_dir / _TEST_SIGNATURES).write_bytes(_test_signatures().read_bytes())
    conf = config.clamd_dir / "clamd.conf"
    conf.write_text(_clamd_conf(config), encoding="utf-8")
    return _spawn(
        [clamd, "--foreground", f"--config-file={conf}"],
        log_path=config.logs_dir / "clamd.log",
        pid_path=_clamd_pid_path(config),
        cwd=config.clamd_dir,
    )
