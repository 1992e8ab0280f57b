"""What a request handler needs, opened once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from fastapi import Request

from services.gateway.policy import UploadPolicy
from shared.adapters.broker import Publisher
from shared.adapters.spool import LocalSpool
from shared.adapters.storage import S3ObjectStorage
from shared.settings import Settings
from shared.topology import Topology


@dataclass(frozen=True)
class GatewayDeps:
    """The open connections and the policy; lives on ``app.state.deps`` while serving."""

    settings: Settings
    pool: asyncpg.Pool
    connection: AbstractRobustConnection
    publisher: Publisher
    storage: S3ObjectStorage
    spool: LocalSpool
    topology: Topology
    policy: UploadPolicy


def get_deps(request: Request) -> GatewayDeps:
    """The app's dependencies (a FastAPI dependency)."""
    deps: GatewayDeps = request.app.state.deps
    return deps
