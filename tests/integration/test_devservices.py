"""The development services come up once, stay up, and behave as the pipeline relies on.

Runs against the real RabbitMQ, PostgreSQL, SeaweedFS and clamd; if one cannot be had, ``up()``
raises and every test here fails. Nothing here stops the services: other test modules share them.
"""

from __future__ import annotations

import base64
import hashlib
import resource
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyclamd
import pytest
from botocore.exceptions import ClientError

from shared.devservices import (
    DevServicesConfig,
    ServiceStatus,
    down,
    eicar_bytes,
    s3_client,
    status,
    up,
)
from shared.devservices.system import RABBITMQ_MIN_OPEN_FILES, _rabbitmq_open_files
from tests.faults.private_clamd import PrivateClamd

pytestmark = pytest.mark.integration

SERVICES = ["rabbitmq", "postgresql", "seaweedfs", "clamd"]


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _pids(config: DevServicesConfig) -> dict[str, str]:
    files = {
        "seaweedfs": config.seaweedfs_dir / "weed.pid",
        "clamd": config.clamd_dir / "clamd.pid",
    }
    return {name: p.read_text().strip() for name, p in files.items() if p.exists()}


@pytest.fixture(scope="module")
def config() -> DevServicesConfig:
    return DevServicesConfig.from_env()


@pytest.fixture(scope="module")
def first_up(services: list[ServiceStatus]) -> list[ServiceStatus]:
    """The session's first ``up()`` (tests/conftest.py), which may have started services."""
    return services


@pytest.fixture
def s3(config: DevServicesConfig, first_up: list[ServiceStatus]) -> Iterator[Any]:
    client = s3_client(config)
    keys: list[str] = []
    yield client, keys
    for key in keys:
        client.delete_object(Bucket=config.s3_bucket, Key=key)


def test_up_is_idempotent(config: DevServicesConfig, first_up: list[ServiceStatus]) -> None:
    assert [s.name for s in first_up] == SERVICES
    assert all(s.healthy for s in first_up), first_up
    pids_before = _pids(config)

    second = up(config)

    assert [s.name for s in second] == SERVICES
    assert all(s.healthy for s in second), second
    assert [s.name for s in second if s.started_by_us] == []
    assert _pids(config) == pids_before
    assert [s.healthy for s in status(config)] == [True] * 4


def test_the_local_rabbitmq_may_open_enough_files(first_up: list[ServiceStatus]) -> None:
    """A node with the default 1024 open files stops taking connections after a few hundred
    quorum queues: ``up`` (re)starts it with the limit raised (docs/development.md)."""
    limit = _rabbitmq_open_files()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limit is not None, "no local RabbitMQ node found"
    assert limit >= min(RABBITMQ_MIN_OPEN_FILES, hard), limit


def test_up_creates_missing_buckets(config: DevServicesConfig, s3: Any) -> None:
    client, _ = s3
    bucket = f"{config.s3_bucket}-devservices-{uuid.uuid4().hex[:8]}"
    try:
        up(config, buckets=[bucket])
        names = {b["Name"] for b in client.list_buckets()["Buckets"]}
        assert {config.s3_bucket, bucket} <= names
    finally:
        client.delete_bucket(Bucket=bucket)


def test_s3_refuses_a_wrong_secret_key(config: DevServicesConfig, s3: Any) -> None:
    with pytest.raises(ClientError) as refused:
        s3_client(config, secret_key="not-the-secret").list_buckets()
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_s3_refuses_an_unknown_access_key(config: DevServicesConfig, s3: Any) -> None:
    with pytest.raises(ClientError) as refused:
        s3_client(config, access_key="nobody").put_object(
            Bucket=config.s3_bucket, Key=f"devservices/{uuid.uuid4()}", Body=b"x"
        )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_s3_refuses_an_unsigned_get(config: DevServicesConfig, s3: Any) -> None:
    client, keys = s3
    key = f"devservices/{uuid.uuid4()}"
    client.put_object(Bucket=config.s3_bucket, Key=key, Body=b"private")
    keys.append(key)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{config.s3_endpoint}/{config.s3_bucket}/{key}", timeout=10)
    assert refused.value.code == 403


def test_s3_refuses_a_wrong_sha256_and_keeps_nothing(config: DevServicesConfig, s3: Any) -> None:
    client, _ = s3
    key = f"devservices/{uuid.uuid4()}"
    with pytest.raises(ClientError) as refused:
        client.put_object(
            Bucket=config.s3_bucket,
            Key=key,
            Body=b"the bytes we send",
            ChecksumSHA256=_sha256_b64(b"some other bytes"),
        )
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as missing:
        client.head_object(Bucket=config.s3_bucket, Key=key)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_s3_keeps_bytes_with_the_right_sha256(config: DevServicesConfig, s3: Any) -> None:
    client, keys = s3
    key = f"devservices/{uuid.uuid4()}"
    data = uuid.uuid4().bytes * 1000
    stored = client.put_object(
        Bucket=config.s3_bucket, Key=key, Body=data, ChecksumSHA256=_sha256_b64(data)
    )
    keys.append(key)
    assert stored["ChecksumSHA256"] == _sha256_b64(data)
    assert client.get_object(Bucket=config.s3_bucket, Key=key)["Body"].read() == data


def test_s3_presigned_get_serves_the_object(config: DevServicesConfig, s3: Any) -> None:
    client, keys = s3
    key = f"devservices/{uuid.uuid4()}"
    client.put_object(Bucket=config.s3_bucket, Key=key, Body=b"shared by link")
    keys.append(key)
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": config.s3_bucket, "Key": key}, ExpiresIn=24 * 3600
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"shared by link"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), timeout=10)
    assert refused.value.code == 403


def test_clamd_detects_eicar(config: DevServicesConfig, first_up: list[ServiceStatus]) -> None:
    clamd = pyclamd.ClamdNetworkSocket("127.0.0.1", config.clamd_port, timeout=10.0)
    assert len(eicar_bytes()) == 68
    verdict = clamd.scan_stream(eicar_bytes())
    assert verdict is not None
    assert verdict["stream"][0] == "FOUND"
    assert verdict["stream"][1].startswith("Eicar-Test-Signature")


def test_clamd_passes_clean_bytes(config: DevServicesConfig, first_up: list[ServiceStatus]) -> None:
    clamd = pyclamd.ClamdNetworkSocket("127.0.0.1", config.clamd_port, timeout=10.0)
    clean = b"an ordinary document, nothing to see here\n" * 50_000  # ~2 MiB, several chunks
    assert clamd.scan_stream(clean) is None


def test_down_leaves_services_it_did_not_start(
    tmp_path: Path, config: DevServicesConfig, first_up: list[ServiceStatus]
) -> None:
    stranger = DevServicesConfig(
        state_dir=tmp_path / "elsewhere", s3_port=config.s3_port, clamd_port=config.clamd_port
    )
    down(stranger)
    assert [s.healthy for s in status(config)] == [True] * 4
    assert [s.managed for s in status(stranger)] == [False] * 4


def test_up_restarts_its_clamd_started_with_an_older_config(tmp_path: Path) -> None:
    clamd = PrivateClamd(tmp_path / "clamd")
    try:
        clamd.start()
        conf = clamd.config.clamd_dir / "clamd.conf"
        pid_file = clamd.config.clamd_dir / "clamd.pid"
        first_pid = pid_file.read_text().strip()
        # What a clamd started before the alerts were configured was started with.
        conf.write_text(conf.read_text().replace("AlertExceedsMax yes\n", ""))

        [again] = up(clamd.config, only=["clamd"], timeout_s=60)

        assert again.started_by_us and again.healthy
        assert pid_file.read_text().strip() != first_pid
        assert "AlertExceedsMax yes\n" in conf.read_text()
        [unchanged] = up(clamd.config, only=["clamd"], timeout_s=60)
        assert not unchanged.started_by_us
    finally:
        clamd.stop()
        clamd.close()
