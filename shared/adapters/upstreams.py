"""Upstream services: their record in PostgreSQL (table ``upstreams``) and their RabbitMQ user.

An upstream service gets a RabbitMQ user of its own whose permissions allow one thing: to
publish ``file.received`` to the ingress exchange (``<prefix>.ingress``). Through the management
HTTP API (RabbitMQ docs, "Management Plugin: HTTP API"; "Access Control: Topic Authorisation"):

- ``PUT /api/users/<name>``: the user, with a random password and no tags (no management UI);
- ``PUT /api/permissions/<vhost>/<name>``: configure ``^$`` (declares nothing), write
  ``^<prefix>\\.ingress$`` (the ingress exchange only), read ``^$`` (consumes nothing);
- ``PUT /api/topic-permissions/<vhost>/<name>``: on the ingress exchange, write the routing key
  ``file.received`` only.

Every other exchange, the stage queues included, is refused by the broker (``ACCESS_REFUSED``),
and a message whose ``user_id`` property is not the user it logged in as is refused too
(RabbitMQ's "validated user-id"). Deleting the user (``DELETE /api/users/<name>``) closes its
connections.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from urllib.parse import quote, unquote, urlsplit

import asyncpg
import httpx

from shared.adapters.db import CONNECTION_ERRORS
from shared.errors import BrokerUnavailable, ConfigError, DatabaseUnavailable, NotAllowed
from shared.ports import Upstream
from shared.topology import INGRESS_ROUTING_KEYS, Topology

#: An upstream's name: its RabbitMQ user name (the ``upstreams.name`` check constraint).
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class UpstreamRecords:
    """The ``upstreams`` table: the :class:`~shared.ports.UpstreamRegistry` port and its
    administration."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def lookup(self, name: str) -> Upstream | None:
        """The active upstream ``name``, or ``None``.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        rows = await self._fetch("WHERE name = $1 AND removed_at IS NULL", name)
        return rows[0] if rows else None

    async def active(self) -> list[Upstream]:
        """Every active upstream, by name.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        return await self._fetch("WHERE removed_at IS NULL ORDER BY name")

    async def add(self, upstream: Upstream) -> None:
        """Record ``upstream`` (a removed one of the same name is brought back with these
        owners and buckets).

        Raises:
            NotAllowed: an active upstream of that name exists.
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        try:
            added = await self._pool.fetchval(
                """
                INSERT INTO upstreams (name, owners, buckets) VALUES ($1, $2, $3)
                ON CONFLICT (name) DO UPDATE
                    SET owners = EXCLUDED.owners, buckets = EXCLUDED.buckets,
                        created_at = now(), removed_at = NULL
                    WHERE upstreams.removed_at IS NOT NULL
                RETURNING name
                """,
                upstream.name,
                list(upstream.owners),
                list(upstream.buckets),
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot record the upstream: {exc!r}") from exc
        if added is None:
            raise NotAllowed(f"upstream {upstream.name!r} already exists", upstream=upstream.name)

    async def remove(self, name: str) -> bool:
        """Mark upstream ``name`` removed; ``False`` if there was no active one.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        try:
            done = await self._pool.fetchval(
                "UPDATE upstreams SET removed_at = now()"
                " WHERE name = $1 AND removed_at IS NULL RETURNING name",
                name,
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot remove the upstream: {exc!r}") from exc
        return done is not None

    async def _fetch(self, where: str, *args: object) -> list[Upstream]:
        try:
            rows = await self._pool.fetch(
                f"SELECT name, owners, buckets, created_at FROM upstreams {where}", *args
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot read upstreams: {exc!r}") from exc
        return [
            Upstream(
                name=row["name"],
                owners=tuple(row["owners"]),
                buckets=tuple(row["buckets"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]


class BrokerUsers:
    """RabbitMQ users of upstream services, through the management HTTP API at
    ``management_url``, with the credentials and virtual host of ``amqp_url`` (Sluice's own
    user, which must have the ``administrator`` tag)."""

    def __init__(
        self, management_url: str, amqp_url: str, topology: Topology, timeout_s: float = 10.0
    ) -> None:
        parts = urlsplit(amqp_url)
        self._auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.vhost = vhost
        self._base = management_url.rstrip("/")
        self._topology = topology
        self._timeout_s = timeout_s

    def permissions(self) -> tuple[dict[str, str], dict[str, str]]:
        """The (permissions, topic permissions) bodies an upstream user gets."""
        exchange = re.escape(self._topology.ingress_exchange)
        keys = "|".join(re.escape(key) for key in INGRESS_ROUTING_KEYS)
        return (
            {"configure": "^$", "write": f"^{exchange}$", "read": "^$"},
            {
                "exchange": self._topology.ingress_exchange,
                "write": f"^({keys})$",
                "read": "^$",
            },
        )

    async def create(self, name: str) -> str:
        """Create (or reset) user ``name`` with a new random password and the upstream
        permissions; the password (shown once, stored nowhere by Sluice).

        Raises:
            BrokerUnavailable: the management API is unreachable or refused.
        """
        password = secrets.token_urlsafe(32)
        permissions, topic = self.permissions()
        user = quote(name, safe="")
        vhost = quote(self.vhost, safe="")
        await self._call("PUT", f"/api/users/{user}", {"password": password, "tags": ""})
        await self._call("PUT", f"/api/permissions/{vhost}/{user}", permissions)
        await self._call("PUT", f"/api/topic-permissions/{vhost}/{user}", topic)
        return password

    async def delete(self, name: str) -> bool:
        """Delete user ``name`` (its connections are closed); ``False`` if it did not exist.

        Raises:
            BrokerUnavailable: the management API is unreachable or refused.
        """
        return await self._call("DELETE", f"/api/users/{quote(name, safe='')}", None) != 404

    async def exists(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` are RabbitMQ users.

        Raises:
            BrokerUnavailable: the management API is unreachable or refused.
        """
        found = set()
        for name in names:
            if await self._call("GET", f"/api/users/{quote(name, safe='')}", None) != 404:
                found.add(name)
        return found

    async def _call(self, method: str, path: str, body: dict[str, str] | None) -> int:
        try:
            async with httpx.AsyncClient(auth=self._auth, timeout=self._timeout_s) as client:
                response = await client.request(method, self._base + path, json=body)
        except httpx.HTTPError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ management API unreachable at {self._base}: {exc!r}"
            ) from exc
        if response.status_code == 404 and method in ("DELETE", "GET"):
            return 404
        if response.status_code in (401, 403):
            raise ConfigError(
                f"RabbitMQ management API refused {method} {path} ({response.status_code}): "
                "SLUICE_AMQP_URL's user needs the administrator tag"
            )
        if response.status_code >= 300:
            raise BrokerUnavailable(
                f"RabbitMQ management API: {method} {path} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        return response.status_code
