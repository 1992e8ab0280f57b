"""A private SeaweedFS (``weed mini``) that a fault test may stop and start at will.

The shared development instance serves every other test; stopping it would disturb them. This
one is started and stopped by the same code as ``sluice services up`` (``shared.devservices``),
with a state directory of its own and ports of its own for every server ``weed mini`` runs
(S3, master, volume, filer, admin, each with its gRPC port: left to their defaults, they would
collide with the shared instance's), reserved for the object's life, and the same key pair.
Its data survives :meth:`PrivateSeaweedFS.stop` / :meth:`PrivateSeaweedFS.start`, as a real
outage's would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from shared import devservices


class PrivateSeaweedFS:
    """One ``weed mini`` under ``state_dir``; S3 at :attr:`endpoint`."""

    def __init__(self, state_dir: Path) -> None:
        self._locks: list[IO[bytes]] = []
        s3_port = self._reserve()
        ports = {flag: self._reserve() for flag in devservices.SEAWEEDFS_PORT_FLAGS}
        self.config = devservices.DevServicesConfig(
            state_dir=state_dir, s3_port=s3_port, seaweedfs_ports=ports
        )

    @property
    def endpoint(self) -> str:
        return self.config.s3_endpoint

    def client(self) -> Any:
        """A botocore S3 client for this instance."""
        return devservices.s3_client(self.config)

    def start(self, timeout_s: float = 60) -> float:
        """Start ``weed mini`` and wait until S3 answers an authenticated ListBuckets; seconds."""
        t0 = time.monotonic()
        devservices.up(self.config, only=["seaweedfs"], timeout_s=timeout_s)
        return time.monotonic() - t0

    def stop(self) -> None:
        """SIGKILL it (an outage, not a shutdown)."""
        devservices.down(self.config, only=["seaweedfs"], kill=True)

    def ensure_bucket(self, name: str) -> None:
        devservices.up(self.config, only=["seaweedfs"], buckets=[name])

    def close(self) -> None:
        """Release the port reservations."""
        for handle in self._locks:
            handle.close()
        self._locks.clear()

    def _reserve(self) -> int:
        port, handle = devservices.reserve_port(18000)
        self._locks.append(handle)
        return port


@contextlib.contextmanager
def private_seaweedfs(state_dir: Path) -> Iterator[PrivateSeaweedFS]:
    """A started private SeaweedFS, killed at the end."""
    instance = PrivateSeaweedFS(state_dir)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        instance.close()
