"""Publishing events to RabbitMQ with publisher confirms.

A publish succeeds only when the broker has confirmed it (``Basic.Ack``) within
``publish_timeout_s``; an unroutable message (``mandatory``, ``on_return_raises=True``; every
event but the ``file.committed`` notification is published mandatory), a
``Basic.Nack``, a timeout or a lost connection raise :class:`~shared.errors.BrokerUnavailable`.
aio-pika would otherwise return an unroutable message as if it had been delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from shared.errors import BrokerUnavailable
from shared.events import BaseEvent
from shared.settings import AmqpSettings
from shared.topology import Topology

HeaderValue = str | int | float | bool | None
#: Headers RabbitMQ sets itself (dead-lettering, quorum-queue delivery counts); a client that
#: republishes a message drops them, or the broker would read stale history.
BROKER_HEADER_PREFIXES = ("x-death", "x-delivery-count", "x-first-death-", "x-last-death-")
_PUBLISH_ERRORS = (
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    asyncio.TimeoutError,
    RuntimeError,
)


def event_message(
    event: BaseEvent, headers: Mapping[str, HeaderValue] | None = None
) -> aio_pika.Message:
    """A persistent AMQP message carrying ``event`` as JSON (``message_id`` = ``event_id``)."""
    return aio_pika.Message(
        body=event.model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event.event_id),
        type=event.type,
        timestamp=event.occurred_at,
        headers=dict(headers or {}),
    )


#: Header keeping, across Sluice's own republishes of a message (retries, parking, dead
#: letters, replays), the ``user_id`` RabbitMQ verified when it was first published: trusted
#: only on a message whose own ``user_id`` is Sluice's (:func:`verified_publisher`).
HEADER_PUBLISHED_BY = "x-sluice-published-by"


def verified_publisher(
    message: AbstractIncomingMessage, own_user: str, headers: Mapping[str, Any] | None = None
) -> str | None:
    """The RabbitMQ user that published ``message`` first, as the broker verified it: its
    ``user_id`` property (RabbitMQ refuses a ``user_id`` other than the publisher's login,
    "Validated User-ID"); for a message Sluice published again (``user_id`` = ``own_user``),
    the :data:`HEADER_PUBLISHED_BY` it carried over; None when nobody vouches for it."""
    if not message.user_id:
        return None
    if message.user_id != own_user:
        return message.user_id
    carried = (message.headers if headers is None else headers) or {}
    value = carried.get(HEADER_PUBLISHED_BY)
    return value if isinstance(value, str) and value else None


def republished(
    message: AbstractIncomingMessage,
    headers: Mapping[str, Any],
    *,
    expiration_s: float | None = None,
    own_user: str | None = None,
) -> aio_pika.Message:
    """A persistent copy of ``message`` (body and properties) to publish again, carrying
    ``headers`` less the broker's own (:data:`BROKER_HEADER_PREFIXES`); ``expiration_s`` is a
    per-message TTL (retry wait queues).

    With ``own_user`` (Sluice's RabbitMQ user, the one publishing the copy), the copy's
    ``user_id`` is ``own_user`` and :data:`HEADER_PUBLISHED_BY` keeps who first published the
    message (:func:`verified_publisher`); without it, the copy has no ``user_id`` and no such
    header: nobody vouches for it."""
    kept = {
        k: v
        for k, v in headers.items()
        if not k.startswith(BROKER_HEADER_PREFIXES) and k != HEADER_PUBLISHED_BY
    }
    user_id = None
    if own_user is not None:
        user_id = own_user
        publisher = verified_publisher(message, own_user, headers)
        if publisher is not None:
            kept[HEADER_PUBLISHED_BY] = publisher
    return aio_pika.Message(
        body=message.body,
        headers=kept,
        user_id=user_id,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
        expiration=expiration_s,
    )


async def connect(settings: AmqpSettings) -> AbstractRobustConnection:
    """A robust connection (reconnects and restores channels, queues and consumers).

    Raises:
        BrokerUnavailable: the broker cannot be reached at start.
    """
    try:
        return await aio_pika.connect_robust(settings.url, timeout=settings.publish_timeout_s)
    except (*_PUBLISH_ERRORS, OSError) as exc:
        raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc!r}") from exc


async def open_channel(
    connection: AbstractRobustConnection, settings: AmqpSettings
) -> AbstractChannel:
    """A channel with publisher confirms, returns raised as errors, and the prefetch set."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await channel.set_qos(prefetch_count=settings.prefetch_count)
    return channel


class Publisher:
    """Publishes events to the topic exchange and raw messages to queues, with confirms."""

    def __init__(self, channel: AbstractChannel, events: AbstractExchange, timeout_s: float):
        self._channel = channel
        self._events = events
        self._timeout_s = timeout_s

    @classmethod
    async def create(
        cls, connection: AbstractRobustConnection, settings: AmqpSettings, topology: Topology
    ) -> Publisher:
        """Open a confirm channel on ``connection``, declare the topology, return a publisher."""
        channel = await open_channel(connection, settings)
        events = await topology.declare(channel)
        return cls(channel, events, settings.publish_timeout_s)

    async def publish(
        self, event: BaseEvent, headers: Mapping[str, HeaderValue] | None = None
    ) -> None:
        """Publish ``event`` under its routing key and wait for the broker's confirm.

        Raises:
            BrokerUnavailable: not confirmed (nack, unroutable, timeout, connection lost).
        """
        await self.publish_message(
            self._events,
            event.routing_key,
            event_message(event, headers),
            mandatory=event.must_route,
            event_id=event.event_id,
        )

    async def publish_to_queue(self, queue: str, message: aio_pika.Message) -> None:
        """Publish ``message`` to ``queue`` through the default exchange, with confirm.

        Raises:
            BrokerUnavailable: not confirmed.
        """
        await self.publish_message(self._channel.default_exchange, queue, message)

    async def publish_to_exchange(
        self, exchange: str, routing_key: str, message: aio_pika.Message
    ) -> None:
        """Publish ``message`` to the named exchange, with confirm.

        Raises:
            BrokerUnavailable: not confirmed.
        """
        target = await self._channel.get_exchange(exchange, ensure=False)
        await self.publish_message(target, routing_key, message)

    async def publish_message(
        self,
        exchange: AbstractExchange,
        routing_key: str,
        message: aio_pika.Message,
        *,
        mandatory: bool = True,
        **context: Any,
    ) -> None:
        """Publish and wait for the confirm; the primitive the others use.

        With ``mandatory`` (the default) a message no queue takes is an error, not a success.
        """
        try:
            await exchange.publish(
                message, routing_key=routing_key, mandatory=mandatory, timeout=self._timeout_s
            )
        except _PUBLISH_ERRORS as exc:
            raise BrokerUnavailable(
                f"publish not confirmed: {exc!r}",
                exchange=exchange.name or "(default)",
                routing_key=routing_key,
                **context,
            ) from exc
