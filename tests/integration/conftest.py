"""What the integration tests share: settings for the local services, fresh databases, buckets
and per-test AMQP prefixes.

Every fixture here stands on ``services`` (``tests/conftest.py``), which starts what is missing
through ``shared.devservices`` and fails every test, never skips one, when a service cannot be
had. A module owns the names it passes in (its database, prefix and bucket): a module runs
whole on one worker, so no other test uses them meanwhile (``tests/conftest.py``); names that
several modules share carry the worker's name (``tests.localenv.worker_name``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import botocore.exceptions
import pytest

from shared import devservices
from shared.settings import DatabaseSettings
from tests import databases
from tests.localenv import FreshBucket, FreshDatabase, Local

_BUCKET_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


@pytest.fixture(scope="session")
def local(services: list[devservices.ServiceStatus]) -> Local:
    """Settings for the local services, which are up."""
    return Local(devservices.DevServicesConfig.from_env())


@pytest.fixture(scope="session")
def raw_s3(local: Local) -> Any:
    """A plain botocore client on the local SeaweedFS, to look at what is really stored."""
    return devservices.s3_client(local.config, timeout_s=30.0)


@pytest.fixture(scope="session")
def fresh_database(local: Local) -> FreshDatabase:
    """``await fresh_database(name)``: database ``name`` dropped if it exists, created and
    migrated (``tests/databases.py``); its settings."""

    async def fresh(name: str) -> DatabaseSettings:
        return await asyncio.to_thread(databases.fresh_database, name, local.server_url)

    return fresh


@pytest.fixture(scope="session")
def fresh_bucket(raw_s3: Any) -> FreshBucket:
    """``fresh_bucket(name)``: bucket ``name`` on the local SeaweedFS, created if missing and
    emptied; its name."""

    def fresh(name: str) -> str:
        client = raw_s3
        try:
            client.create_bucket(Bucket=name)
        except botocore.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] not in {
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            }:
                raise
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        return name

    return fresh


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """An AMQP prefix of this test alone, ``t_<module>_<random>`` (e.g. ``t_status_1a2b3c4d``):
    RabbitMQ's management API keeps a deleted queue's rate samples for a while, so a queue
    declared again under the same name would inherit an earlier test's rates."""
    module = request.path.stem.removeprefix("test_")
    return f"t_{module}_{uuid.uuid4().hex[:8]}"
