"""A clamd of the test's own, to stop and start at will without disturbing the shared one:
started and stopped by the same code as ``sluice services up`` (``shared.devservices``: the
same Debian binary, configuration and test signatures), under its own directory and port."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from shared import devservices
from shared.adapters.scanner import ClamdScanner


@dataclass
class PrivateClamd:
    """clamd on a port of its own (reserved until :meth:`close`) with its files under
    ``home``; :meth:`start` waits for a real verdict (the EICAR test file found)."""

    home: Path
    stream_max_mib: int = 64
    config: devservices.DevServicesConfig = field(init=False)
    _lock: IO[bytes] = field(init=False)

    def __post_init__(self) -> None:
        port, self._lock = devservices.reserve_port(13310)
        self.config = devservices.DevServicesConfig(
            state_dir=self.home, clamd_port=port, clamd_stream_max_mib=self.stream_max_mib
        )

    @property
    def port(self) -> int:
        return self.config.clamd_port

    def start(self, timeout_s: float = 60) -> None:
        devservices.up(self.config, only=["clamd"], timeout_s=timeout_s)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        devservices.down(self.config, only=["clamd"])

    def close(self) -> None:
        """Release the port reservation."""
        self._lock.close()

    def scanner(self) -> ClamdScanner:
        return ClamdScanner("127.0.0.1", self.port, timeout_s=10.0)
