"""A clamd of the test's own (same Debian binary and test signatures), to stop and start at will
without disturbing the shared one."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.adapters.scanner import ClamdScanner
from tests.e2e.pipeline import ROOT, free_port


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class PrivateClamd:
    """clamd on a free port with ``<home>/clamd.conf``; :meth:`start` waits for a real verdict."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> None:
        binary = shutil.which("clamd") or "/usr/sbin/clamd"
        (self.home / "db").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "shared" / "clamav" / "sluice-test.ndb", self.home / "db" / "test.ndb")
        conf = self.home / "clamd.conf"
        conf.write_text(
            f"DatabaseDirectory {self.home / 'db'}\nTCPSocket {self.port}\nTCPAddr 127.0.0.1\n"
            "Foreground yes\nStreamMaxLength 64M\n"
        )
        log = (self.home / "clamd.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "--foreground", f"--config-file={conf}"], stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout_s
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.home / "clamd.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"private clamd did not start: {tail}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def scanner(self) -> ClamdScanner:
        return ClamdScanner("127.0.0.1", self.port, timeout_s=10.0)
