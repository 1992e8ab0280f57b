"""clamd: Debian's daemon run with a config written below state_dir and the test signature
database shipped as ``shared/clamav/sluice-test.ndb``, checked by scanning the EICAR string."""

from __future__ import annotations

import importlib.resources
import subprocess
from importlib.resources.abc import Traversable
from pathlib import Path

import structlog

from shared.devservices.config import DevServicesConfig
from shared.devservices.processes import _port_open, _read_pid, _spawn, _terminate, _which
from shared.errors import ServiceStartError

log = structlog.get_logger(__name__)

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
            *scan_limits(config.clamd_stream_max_mib),
            "",
        ]
    )


def scan_limits(stream_max_mib: int = 64) -> list[str]:
    """The ``clamd.conf`` lines that make clamd report what it cannot scan whole, and its limits
    (``man clamd.conf``; ClamAV 1.4). The compose stack's clamd gets the same lines as the
    ``CLAMD_CONF_*`` environment of its ``clamav`` service (``compose/docker-compose.yml``).

    Sluice takes images up to 10 MiB and PDFs up to 5 MiB from the gateway (seed 000) and
    ``s3://`` sources up to 64 MiB from upstream services (the source reader's ``max_bytes``):

    - ``StreamMaxLength`` = ``stream_max_mib`` (64): every file Sluice reads fits in one
      ``INSTREAM``; a longer one is refused, which the scanner reads as no verdict (retried);
    - ``MaxFileSize`` = the same: a whole file is never over it, a file inside an archive or a
      document may be;
    - ``MaxScanSize 256M``: the file and everything unpacked from it (a PDF's streams, an
      archive's members), four times the largest file;
    - ``MaxRecursion 17``, ``MaxFiles 10000``: clamd's defaults, written down so they are seen;
    - ``AlertEncryptedArchive``, ``AlertEncryptedDoc``: an encrypted ZIP, 7z, RAR or PDF is
      reported ``Heuristics.Encrypted.<format>`` instead of ``OK`` (a PDF that opens without a
      password is decrypted and scanned, not reported);
    - ``AlertExceedsMax``: a file past ``MaxFileSize``, ``MaxScanSize``, ``MaxRecursion``,
      ``MaxFiles`` or ``MaxScanTime`` (120 s) is reported ``Heuristics.Limits.Exceeded.<limit>``
      instead of ``OK`` for the part it did scan. One exception, seen with ClamAV 1.4.6: a
      member of a ZIP bigger than ``MaxFileSize`` is cut to that size and scanned, without an
      alert (libclamav's ``unzip.c``); a ZIP's members together are still held to
      ``MaxScanSize``;
    - ``ScanImageFuzzyHash no``: clamd (since 0.105) otherwise decodes every image to compute
      its fuzzy hash, for the ``fuzzy_img#`` logical signatures that match known pictures
      (phishing lures), not exploits. Measured with ClamAV 1.4.6 on 12 MP camera JPEGs: 140 ms
      of clamd CPU per file with it, 50 ms without (``docs/performance.md``). Images are still
      parsed and matched against every other signature (``ScanImage`` stays on). Set it back
      to ``yes`` where such signatures are relied on.

    The scan stage rejects both kinds as ``unscannable`` (``services/scan/handler.py``).
    """
    return [
        f"StreamMaxLength {stream_max_mib}M",
        f"MaxFileSize {stream_max_mib}M",
        "MaxScanSize 256M",
        "MaxRecursion 17",
        "MaxFiles 10000",
        "AlertEncryptedArchive yes",
        "AlertEncryptedDoc yes",
        "AlertExceedsMax yes",
        "ScanImageFuzzyHash no",
    ]


def _stop_outdated_clamd(config: DevServicesConfig) -> int | None:
    """Stop the clamd this state_dir runs when the ``clamd.conf`` it was started with is not the
    one :func:`_clamd_conf` writes now (clamd reads its configuration only at start), so that
    :func:`~shared.devservices.up` starts it again with the current one. Returns the stopped
    pid, or ``None`` when there was nothing to stop. A clamd started by anyone else is left
    alone."""
    pid = _read_pid(_clamd_pid_path(config), "clamd")
    conf = config.clamd_dir / "clamd.conf"
    if pid is None or not conf.exists() or conf.read_text(encoding="utf-8") == _clamd_conf(config):
        return None
    _terminate(pid)
    _clamd_pid_path(config).unlink(missing_ok=True)
    log.info("devservice.stopped", service="clamd", pid=pid, reason="clamd.conf changed")
    return pid


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
