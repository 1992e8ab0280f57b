"""What a request handler needs, opened once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from fastapi import Request

from services.gateway.keys import KeyCache
from services.gateway.relay import OutboxRelay
from services.gateway.renditions import Renditions
from services.gateway.slots import OwnerSlots
from shared.adapters.broker import Publisher
from shared.adapters.outbox import EventOutbox
from shared.adapters.signed_urls import UrlSigner
from shared.adapters.spools import Spools
from shared.policy import UploadPolicy
from shared.ports import ObjectStore
from shared.settings import Settings
from shared.topology import Topology


@dataclass(frozen=True)
class GatewayDeps:
    """The open connections, the policy, the event outbox and its relay, the API key cache,
    the owners' upload slots, the rendition maker, the signer of the URLs the gateway serves
    without an API key; lives on ``app.state.deps`` while serving."""

    settings: Settings
    pool: asyncpg.Pool
    connection: AbstractRobustConnection
    publisher: Publisher
    storage: ObjectStore
    spool: Spools
    topology: Topology
    policy: UploadPolicy
    outbox: EventOutbox
    relay: OutboxRelay
    keys: KeyCache
    uploads: OwnerSlots
    renditions: Renditions
    signer: UrlSigner

    def broker_connected(self) -> bool:
        """Whether the RabbitMQ connection is up (not closed, not reconnecting)."""
        return not self.connection.is_closed and self.connection.connected.is_set()


def get_deps(request: Request) -> GatewayDeps:
    """The app's dependencies (a FastAPI dependency)."""
    deps: GatewayDeps = request.app.state.deps
    return deps
