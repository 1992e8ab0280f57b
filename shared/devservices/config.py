"""Where the development services listen and where their files go (:class:`DevServicesConfig`),
and what a check of one reports (:class:`ServiceStatus`). The error raised when one cannot be
had is :class:`shared.errors.ServiceStartError`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shared.errors import ConfigError


@dataclass(frozen=True)
class DevServicesConfig:
    """Where the development services listen and where their files go.

    ``state_dir`` is resolved against the current directory when the config is built. The
    S3 gateway, clamd and the URLs are all on 127.0.0.1.

    A second SeaweedFS or clamd beside the machine's (the fault tests' private ones) needs a
    state_dir and ports of its own: ``seaweedfs_ports`` gives ``weed mini``'s other servers
    theirs, by flag name (see :data:`shared.devservices.seaweedfs.SEAWEEDFS_PORT_FLAGS`;
    unnamed ones keep weed's defaults, which one instance per machine can have).
    """

    state_dir: Path = field(default_factory=lambda: Path(".sluice"))
    s3_port: int = 8333
    s3_access_key: str = "sluice"
    s3_secret_key: str = "sluice-secret-key"
    s3_bucket: str = "sluice"
    clamd_port: int = 3310
    #: clamd's ``StreamMaxLength``, MiB: a longer INSTREAM is refused (the scanner's "no verdict").
    clamd_stream_max_mib: int = 64
    #: ``weed mini`` flag name (e.g. ``master.port``) → port, for the servers besides S3.
    seaweedfs_ports: Mapping[str, int] = field(default_factory=dict)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    #: ``SLUICE_STORAGE_BACKEND``: with ``local`` (and the local spool) no S3 is needed.
    storage_backend: str = "s3"
    #: ``SLUICE_SPOOL_BACKEND``: ``s3`` needs S3 whatever the storage backend.
    spool_backend: str = "local"
    #: ``SLUICE_STORAGE_LOCAL_DIR``; default ``<state_dir>/objects``.
    storage_local_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).resolve())
        local_dir = self.storage_local_dir or self.state_dir / "objects"
        object.__setattr__(self, "storage_local_dir", Path(local_dir).expanduser().resolve())

    @property
    def needs_s3(self) -> bool:
        """Whether Sluice configured this way talks to S3 at all (docs/storage.md)."""
        return self.storage_backend != "local" or self.spool_backend == "s3"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DevServicesConfig:
        """Build a config from ``S3_ENDPOINT`` (its port), ``S3_ACCESS_KEY``, ``S3_SECRET_KEY``,
        ``S3_BUCKET_NAME``, ``SLUICE_CLAMD_PORT``, ``SLUICE_STATE_DIR``, ``SLUICE_AMQP_URL``,
        ``SLUICE_DATABASE_URL``, ``SLUICE_STORAGE_BACKEND``, ``SLUICE_SPOOL_BACKEND`` and
        ``SLUICE_STORAGE_LOCAL_DIR``; unset variables keep the defaults.

        Raises:
            ConfigError: a port is not an integer in 1..65535 (names the variable).
        """
        env = os.environ if environ is None else environ
        default = cls()
        s3_port = default.s3_port
        if endpoint := env.get("S3_ENDPOINT"):
            try:
                parts = urlsplit(endpoint)
                s3_port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError as exc:
                raise ConfigError(f"S3_ENDPOINT has a bad port: {endpoint!r}") from exc
        clamd_port = _port_from_env(env, "SLUICE_CLAMD_PORT", default.clamd_port)
        return cls(
            state_dir=Path(env.get("SLUICE_STATE_DIR") or default.state_dir),
            s3_port=s3_port,
            s3_access_key=env.get("S3_ACCESS_KEY") or default.s3_access_key,
            s3_secret_key=env.get("S3_SECRET_KEY") or default.s3_secret_key,
            s3_bucket=env.get("S3_BUCKET_NAME") or default.s3_bucket,
            clamd_port=clamd_port,
            amqp_url=env.get("SLUICE_AMQP_URL") or default.amqp_url,
            database_url=env.get("SLUICE_DATABASE_URL") or default.database_url,
            storage_backend=env.get("SLUICE_STORAGE_BACKEND") or default.storage_backend,
            spool_backend=env.get("SLUICE_SPOOL_BACKEND") or default.spool_backend,
            storage_local_dir=Path(local)
            if (local := env.get("SLUICE_STORAGE_LOCAL_DIR"))
            else None,
        )

    @property
    def s3_endpoint(self) -> str:
        """The S3 gateway's URL, e.g. ``http://127.0.0.1:8333``."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def seaweedfs_dir(self) -> Path:
        return self.state_dir / "seaweedfs"

    @property
    def clamd_dir(self) -> Path:
        return self.state_dir / "clamd"


@dataclass(frozen=True)
class ServiceStatus:
    """One service as seen by :func:`up` or :func:`status`.

    ``started_by_us`` is true only when this very call started it; ``managed`` is true when it
    runs from this state_dir's pid file, so :func:`down` would stop it. ``elapsed_s`` is the
    wall time spent checking (and starting) it, in seconds.
    """

    name: str
    address: str
    healthy: bool
    started_by_us: bool
    detail: str
    managed: bool = False
    elapsed_s: float = 0.0


def _port_from_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer port, got {raw!r}", variable=name) from exc
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be in 1..65535, got {port}", variable=name)
    return port
