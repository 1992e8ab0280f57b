"""A private SeaweedFS (``weed mini``) that a fault test may stop and start at will.

The shared development instance (``shared.devservices``) serves every other test; stopping it
would disturb them. This one gets its own data directory and its own ports for every server
``weed mini`` runs (master, volume, filer, S3, admin, each with its gRPC port: left to their
defaults, they would collide with the shared instance's), and the same key pair. Its data
survives :meth:`PrivateSeaweedFS.stop` / :meth:`PrivateSeaweedFS.start`, as a real outage's
would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared import devservices
from shared.devservices.config import DevServicesConfig
from shared.devservices.seaweedfs import _ensure_buckets, _find_weed, _s3_check
from tests.e2e.pipeline import free_port

_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class PrivateSeaweedFS:
    """One ``weed mini`` under ``state_dir``; S3 at :attr:`endpoint`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.s3_port = free_port()
        self.ports = {flag: free_port() for flag in _PORT_FLAGS}
        self.config = DevServicesConfig(state_dir=state_dir, s3_port=self.s3_port)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return self.config.s3_endpoint

    def client(self) -> Any:
        """A botocore S3 client for this instance."""
        return devservices.s3_client(self.config)

    def start(self, timeout_s: float = 60) -> float:
        """Start ``weed mini`` and wait until S3 answers an authenticated ListBuckets; seconds."""
        t0 = time.monotonic()
        data = self.state_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.config.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.config.s3_secret_key,
        }
        command = [
            _find_weed(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        log = (self.state_dir / "weed.log").open("ab")
        self.process = subprocess.Popen(
            command, cwd=data, env=env, stdout=log, stderr=log, start_new_session=True
        )
        check = _s3_check(self.config)
        problem: str | None = "not started"
        while time.monotonic() - t0 < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited {self.process.returncode}: {self.log_tail()}")
            problem = check()
            if problem is None:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise RuntimeError(f"private SeaweedFS not healthy: {problem}; {self.log_tail()}")

    def stop(self) -> None:
        """SIGKILL the whole process group (an outage, not a shutdown)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def ensure_bucket(self, name: str) -> None:
        _ensure_buckets(self.config, [name])

    def log_tail(self, chars: int = 2000) -> str:
        path = self.state_dir / "weed.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@contextlib.contextmanager
def private_seaweedfs(state_dir: Path) -> Iterator[PrivateSeaweedFS]:
    """A started private SeaweedFS, killed at the end."""
    instance = PrivateSeaweedFS(state_dir)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
