"""Names and settings for the local services of ``shared.devservices`` (``sluice services up``),
as the tests use them: :func:`worker_name` for names several test modules share, :class:`Local`
for settings built in code."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import devservices
from shared.settings import (
    AmqpSettings,
    ClamdSettings,
    DatabaseSettings,
    GatewaySettings,
    LogSettings,
    S3Settings,
    Settings,
    SpoolSettings,
    ThumbnailSettings,
)


def worker_name(name: str, separator: str = "_") -> str:
    """``name`` as it is, or followed by the pytest-xdist worker's name (``name_gw1``) when the
    suite runs on several workers: for a database, prefix or bucket that tests of several
    modules share, which two workers may run at the same time."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{name}{separator}{worker}" if worker else name


@dataclass(frozen=True)
class Local:
    """Settings for the local services, built in code: the environment is not read for anything
    that matters."""

    config: devservices.DevServicesConfig

    @property
    def server_url(self) -> str:
        """The local PostgreSQL server's URL, to which a database name is appended."""
        return self.config.database_url.rsplit("/", 1)[0]

    def amqp(self, prefix: str, **fields: Any) -> AmqpSettings:
        """RabbitMQ at the local URL, under ``prefix``; other ``AmqpSettings`` fields as given."""
        return AmqpSettings(**{"url": self.config.amqp_url, "prefix": prefix, **fields})

    def s3(self, bucket: str, **fields: Any) -> S3Settings:
        """The local SeaweedFS with its key pair, for ``bucket``."""
        return S3Settings(
            **{
                "endpoint": self.config.s3_endpoint,
                "access_key": self.config.s3_access_key,
                "secret_key": self.config.s3_secret_key,
                "bucket_name": bucket,
                **fields,
            }
        )

    def database(self, name: str, **fields: Any) -> DatabaseSettings:
        """Database ``name`` on the local PostgreSQL server."""
        return DatabaseSettings(**{"url": f"{self.server_url}/{name}", **fields})

    def clamd(self) -> ClamdSettings:
        """The local clamd."""
        return ClamdSettings(host="127.0.0.1", port=self.config.clamd_port)

    def settings(
        self,
        spool_dir: Path,
        *,
        amqp: AmqpSettings,
        database: DatabaseSettings,
        s3: S3Settings | None = None,
        gateway: GatewaySettings | None = None,
        thumbnail: ThumbnailSettings | None = None,
    ) -> Settings:
        """Everything a stage or the gateway needs; S3 defaults to the shared test bucket
        ``sluice-test``; logs are JSON, at level warning."""
        return Settings(
            amqp=amqp,
            s3=s3 or self.s3("sluice-test"),
            database=database,
            spool=SpoolSettings(dir=spool_dir),
            clamd=self.clamd(),
            gateway=gateway or GatewaySettings(),
            thumbnail=thumbnail or ThumbnailSettings(),
            log=LogSettings(format="json", level="warning"),
        )


#: ``await fresh_database(name)`` (the fixture): database ``name`` dropped, created, migrated.
FreshDatabase = Callable[[str], Awaitable[DatabaseSettings]]
#: ``fresh_bucket(name)`` (the fixture): bucket ``name`` made if missing, and emptied.
FreshBucket = Callable[[str], str]
