"""Every exchange and queue of Sluice, declared in one place so ops and code agree on names.

::

    sluice.ingress (topic, upstream services' door) ── file.received ──► sluice.ingress
                   (the ingress stage checks who sent it, then publishes it to sluice.events)
    sluice.events  (topic) ── file.{received,                                  ─┐
                               rescan_requested} ──────────► sluice.scan       ─┤
                           ── file.scanned ───────────────► sluice.store      ─┤ x-dead-letter-
                           ── file.stored ────────────────► sluice.thumbnail  ─┤ exchange:
                           ── file.stored ──► sluice.pdftext, sluice.ocr,      │
                                              sluice.video                     │
                                              (optional, bound by their own    │
                                               workers; docs/transforms.md)    │
                           ── file.{received,scanned,                          │ sluice.dlx
                               rejected,stored,thumbnailed,                    │ (direct, key =
                               fallback,deferred,corrupted,                    │  stage name)
                               dead_letter_purged,deleted,updated,             │
                               rescanned,quarantined,                          │
                               text_extracted,text_failed,                     │
                               video_processed,                                │
                               video_failed} ────────────► sluice.commit     ─┤
                           ── file.deleted ───────────────► sluice.purge      ─┤
                           ── file.{committed,deleted,                         │
                               quarantined} ──► sluice.mirror (optional, ─────┘
                                                bound by the mirror itself)
    sluice.<stage>.retry  (wait queue, per-message TTL) ──expired──► sluice.<stage> only
    sluice.dlx (direct) ── <stage> ──► sluice.<stage>.dlq
               └── store.fallback ──► sluice.fallback (the store stage's dead letters for an
                   S3 outage; the fallback worker's queue, whose own dead letters go to
                   sluice.store.dlq) ── sluice.fallback.retry as for any stage

Stage queues are quorum queues with a delivery limit (a message that crashes its consumer again
and again is dead-lettered rather than redelivered forever) and at-least-once dead-lettering
(``x-dead-letter-strategy=at-least-once`` needs ``x-overflow=reject-publish``; RabbitMQ docs,
"Quorum Queues: dead lettering"). Retries go through the stage's own wait queue, whose expired
messages are dead-lettered through the default exchange straight back to that stage's queue,
never through the topic exchange where other stages would see them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from shared.settings import AmqpSettings

#: Stage name → routing keys its queue is bound to.
STAGE_BINDINGS: dict[str, tuple[str, ...]] = {
    "scan": ("file.received", "file.rescan_requested"),
    "store": ("file.scanned",),
    "thumbnail": ("file.stored",),
    "commit": (
        "file.received",
        "file.scanned",
        "file.rejected",
        "file.stored",
        "file.thumbnailed",
        "file.fallback",
        "file.deferred",
        "file.corrupted",
        "file.dead_letter_purged",
        "file.dead_lettered",
        "file.updated",
        "file.deleted",
        *("file.rescanned", "file.quarantined"),
        *("file.text_extracted", "file.text_failed"),
        *("file.video_processed", "file.video_failed"),
    ),
    "purge": ("file.deleted",),
}
STAGES: tuple[str, ...] = tuple(STAGE_BINDINGS)
#: The optional transforms (``SLUICE_PDFTEXT_ENABLED``, ``SLUICE_OCR_ENABLED``,
#: ``SLUICE_VIDEO_ENABLED``;
#: docs/transforms.md) → the routing keys their queues take. Their work, wait and dead-letter
#: queues are declared with every other stage's (so ``sluice status`` and ``sluice dlq`` see
#: them), but each work queue is bound by its own worker at its start
#: (:meth:`Topology.bind_transform`): where a transform never ran, no ``file.stored`` piles up.
TRANSFORM_BINDINGS: dict[str, tuple[str, ...]] = {
    "pdftext": ("file.stored",),
    "ocr": ("file.stored",),
    "video": ("file.stored",),
}
TRANSFORMS: tuple[str, ...] = tuple(TRANSFORM_BINDINGS)
#: The fallback worker's stage name; its queue takes the store stage's S3-outage dead letters.
FALLBACK = "fallback"
#: The ingress stage: upstream services' ``file.received``, published to their own exchange
#: (``<prefix>.ingress``), checked against who sent them, then published to ``<prefix>.events``.
INGRESS = "ingress"
#: The routing keys the ingress exchange takes (an upstream user's topic permission).
INGRESS_ROUTING_KEYS: tuple[str, ...] = ("file.received",)
#: Every worker a deployment runs: the ingress, the pipeline stages and the fallback.
WORKERS: tuple[str, ...] = (INGRESS, *STAGES, FALLBACK)
#: The optional backup mirror (``SLUICE_MIRROR_ENABLED``): its queue takes committed files, and
#: deleted or quarantined ones, to copy or remove them on the second S3. As a transform's, its
#: work, wait and dead-letter queues are declared with every other stage's (so ``sluice status``
#: and ``sluice dlq`` see them), and its work queue is bound by the mirror worker at its start
#: (:meth:`Topology.declare_mirror`), never by the others: no queue fills up where no mirror
#: runs.
MIRROR = "mirror"
MIRROR_ROUTING_KEYS: tuple[str, ...] = ("file.committed", "file.deleted", "file.quarantined")
#: The stages with a dead-letter queue of their own (the fallback's go to the store stage's).
DEAD_LETTER_STAGES: tuple[str, ...] = (INGRESS, *STAGES, *TRANSFORMS, MIRROR)
#: The stage whose dead letters feed the fallback worker: those it gave up on because S3 is
#: unavailable.
FALLBACK_FEED = "store"
#: The dead-letter routing key of a store message given up on because S3 is unavailable.
FALLBACK_ROUTE = f"{FALLBACK_FEED}.{FALLBACK}"
#: Where the fallback worker's own failures go: the store stage's dead-letter queue, from
#: which a replay sends them back to the store stage once S3 is back.
FALLBACK_DEAD_LETTERS = "store"


def is_dead_letter_route(route: str) -> bool:
    """Whether a message dead-lettered with routing key ``route`` lands in the dead-letter
    queue of a pipeline stage (``<stage>.dlq``, waiting for a person) about a file of Sluice's,
    rather than in the fallback worker's queue (:data:`FALLBACK_ROUTE`), the ingress's (what
    an upstream service sent was refused: no file of Sluice's is concerned) or the mirror's
    (its backup copy failed, not the file: a replayed copy announces nothing that would clear
    the file's mark again)."""
    return route in STAGES or route in TRANSFORMS


def accepted_event_types(worker: str) -> frozenset[str]:
    """The event types ``worker`` takes, i.e. those its queue receives: the routing keys a stage
    queue is bound to (:data:`STAGE_BINDINGS`); for the fallback, those of the stage whose dead
    letters feed it (:data:`FALLBACK_FEED`); for the ingress, :data:`INGRESS_ROUTING_KEYS`. The
    run loop dead-letters any other as invalid.

    Raises:
        KeyError: ``worker`` is not one of :data:`WORKERS`.
    """
    if worker == INGRESS:
        return frozenset(INGRESS_ROUTING_KEYS)
    if worker == MIRROR:
        return frozenset(MIRROR_ROUTING_KEYS)
    if worker in TRANSFORM_BINDINGS:
        return frozenset(TRANSFORM_BINDINGS[worker])
    return frozenset(STAGE_BINDINGS[FALLBACK_FEED if worker == FALLBACK else worker])


@dataclass(frozen=True)
class Topology:
    """Names of the broker objects under one prefix (``SLUICE_AMQP_PREFIX``, default `sluice`)."""

    prefix: str = "sluice"
    delivery_limit: int = 5

    @classmethod
    def of(cls, amqp: AmqpSettings) -> Topology:
        """The topology under ``SLUICE_AMQP_PREFIX`` with ``SLUICE_AMQP_DELIVERY_LIMIT``."""
        return cls(prefix=amqp.prefix, delivery_limit=amqp.delivery_limit)

    @property
    def exchange(self) -> str:
        """The topic exchange every ``file.*`` event is published to."""
        return f"{self.prefix}.events"

    @property
    def ingress_exchange(self) -> str:
        """The topic exchange upstream services publish ``file.received`` to; the only thing
        their RabbitMQ users may write (docs/security.md)."""
        return f"{self.prefix}.ingress"

    @property
    def dead_letter_exchange(self) -> str:
        """The direct exchange routing dead letters to ``<stage>.dlq`` by stage name."""
        return f"{self.prefix}.dlx"

    def queue(self, stage: str) -> str:
        """The stage's work queue, e.g. ``sluice.scan``."""
        return f"{self.prefix}.{stage}"

    def retry_queue(self, stage: str) -> str:
        """The stage's wait queue for backoff, e.g. ``sluice.scan.retry``."""
        return f"{self.prefix}.{stage}.retry"

    def dead_letter_queue(self, stage: str) -> str:
        """The stage's dead-letter queue, e.g. ``sluice.scan.dlq``."""
        return f"{self.prefix}.{stage}.dlq"

    def all_queues(self) -> list[str]:
        """Every queue name, stage by stage (work, retry, dead-letter; the ingress first), then
        the fallback's."""
        return [
            name
            for stage in DEAD_LETTER_STAGES
            for name in (self.queue(stage), self.retry_queue(stage), self.dead_letter_queue(stage))
        ] + [self.queue(FALLBACK), self.retry_queue(FALLBACK)]

    def stage_queue_arguments(self, stage: str) -> dict[str, Any]:
        """Arguments of a stage's quorum queue (delivery limit, at-least-once dead-lettering).

        The fallback queue dead-letters to the store stage's dead-letter queue."""
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": FALLBACK_DEAD_LETTERS if stage == FALLBACK else stage,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def retry_queue_arguments(self, stage: str) -> dict[str, Any]:
        """Arguments of a stage's wait queue: expired messages go back to the stage queue only."""
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue(stage),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare(self, channel: AbstractChannel) -> AbstractExchange:
        """Declare every exchange, queue and binding (idempotent); return the events exchange."""
        events = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        ingress = await channel.declare_exchange(
            self.ingress_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        bindings = (
            [(INGRESS, ingress, INGRESS_ROUTING_KEYS)]
            + [(stage, events, keys) for stage, keys in STAGE_BINDINGS.items()]
            + [(stage, events, ()) for stage in (*TRANSFORMS, MIRROR)]  # bound by their workers
        )
        for stage, exchange, routing_keys in bindings:
            queue = await channel.declare_queue(
                self.queue(stage), durable=True, arguments=self.stage_queue_arguments(stage)
            )
            for routing_key in routing_keys:
                await queue.bind(exchange, routing_key)
            await channel.declare_queue(
                self.retry_queue(stage), durable=True, arguments=self.retry_queue_arguments(stage)
            )
            dead_letters = await channel.declare_queue(
                self.dead_letter_queue(stage), durable=True, arguments={"x-queue-type": "quorum"}
            )
            await dead_letters.bind(dlx, stage)
        fallback = await channel.declare_queue(
            self.queue(FALLBACK), durable=True, arguments=self.stage_queue_arguments(FALLBACK)
        )
        await fallback.bind(dlx, FALLBACK_ROUTE)
        await channel.declare_queue(
            self.retry_queue(FALLBACK), durable=True, arguments=self.retry_queue_arguments(FALLBACK)
        )
        return events

    async def bind_transform(self, channel: AbstractChannel, stage: str) -> None:
        """Bind the transform ``stage``'s work queue to its routing keys
        (:data:`TRANSFORM_BINDINGS`; idempotent, after :meth:`declare`): from then on it takes
        every ``file.stored``, whether its worker runs or not.

        Raises:
            KeyError: ``stage`` is not one of :data:`TRANSFORMS`.
        """
        events = await channel.get_exchange(self.exchange, ensure=True)
        queue = await channel.get_queue(self.queue(stage), ensure=True)
        for routing_key in TRANSFORM_BINDINGS[stage]:
            await queue.bind(events, routing_key)

    async def declare_mirror(self, channel: AbstractChannel) -> None:
        """Declare the mirror's work, wait and dead-letter queues (as :meth:`declare` does) and
        bind its work queue to :data:`MIRROR_ROUTING_KEYS` (idempotent; after :meth:`declare`):
        from then on it takes every committed file, whether the mirror runs or not."""
        events = await channel.get_exchange(self.exchange, ensure=True)
        queue = await channel.declare_queue(
            self.queue(MIRROR), durable=True, arguments=self.stage_queue_arguments(MIRROR)
        )
        for routing_key in MIRROR_ROUTING_KEYS:
            await queue.bind(events, routing_key)
        await channel.declare_queue(
            self.retry_queue(MIRROR), durable=True, arguments=self.retry_queue_arguments(MIRROR)
        )
        dead_letters = await channel.declare_queue(
            self.dead_letter_queue(MIRROR), durable=True, arguments={"x-queue-type": "quorum"}
        )
        dlx = await channel.get_exchange(self.dead_letter_exchange, ensure=True)
        await dead_letters.bind(dlx, MIRROR)

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete every queue and both exchanges under this prefix, messages included.

        For tearing down a test or throw-away environment; irreversible.
        """
        for name in self.all_queues():
            await channel.queue_delete(name)
        for name in (self.exchange, self.ingress_exchange, self.dead_letter_exchange):
            await channel.exchange_delete(name)
