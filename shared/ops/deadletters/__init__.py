"""Inspecting, replaying and purging the stages' dead letters (``<prefix>.<stage>.dlq``).

:func:`list_dead_letters` and :func:`show_dead_letter` read dead-letter queues without
consuming them; :func:`replay` moves dead letters back to their stage queue after a fix;
:func:`purge` removes them for good, recording each in its file's history. All of them take a
:class:`Selection` (stages, error type, age, file id). What a message says is read by
``shared.ops.deadletters.messages``.

**Reading without consuming.** AMQP 0-9-1 has no peek: a dead-letter queue is *held*: every
message taken with ``basic.get`` (no auto-ack), then each one given back with
``basic.nack(requeue=True)`` in the order they were taken, waiting until each is ready again
before the next. Measured on RabbitMQ 3.10 with quorum queues
(``tests/integration/test_deadletters.py``):

- a nacked message goes to the *back* of a quorum queue without a delivery limit (a
  dead-letter queue); since the whole queue is held, back is also front, and the order is kept;
- nacks sent back to back are not: with 32 requeues unconfirmed, the channel's quorum-queue
  client switches to batching (its soft limit), and batches came back reversed. Waiting for
  each requeue (the queue's ready count) costs about 5 ms a message;
- messages given back by *closing the channel* go to the front, but above a few dozen in hash
  order, so only a failure (or a killed process) relies on that;
- every requeue counts as a delivery: each reading adds one to every message's
  ``x-delivery-count``. Dead-letter queues are declared without ``x-delivery-limit``, so on
  RabbitMQ 3.x nothing is ever dropped for it (RabbitMQ 4.0 gives quorum queues a default
  limit of 20; see docs/deadletters.md).

A message that arrives while a queue is held is read too, or, if it arrives after the last
get, ends up ahead of the held ones. A consumer on the same queue would take messages as they
are given back (the reading then stops waiting and may reorder): nothing consumes a
dead-letter queue in Sluice.

**Moving safely.** A replay takes messages head first; one that matches the selection is
copied to its stage queue (default exchange, never the topic exchange, so no other stage sees
it again) with a publisher confirm and only then acked from the dead-letter queue; one that
does not is held, and once any is held the rest of the queue is taken too so that all the
held ones go back in their order. A purge publishes a ``file.dead_letter_purged`` with a
confirm before it acks. A process killed at any point leaves each message in the dead-letter
queue (unacked messages return when the connection drops), or replayed, or, for the one
between confirm and ack, in both; the stages are idempotent by ``event_id`` (RabbitMQ:
at-least-once delivery), so that duplicate is harmless. A replay or a purge looks at no more
messages than the queue held when it started, so a message that fails again at once and comes
back is not replayed in a loop.
"""

from shared.ops.deadletters.messages import (
    HEADER_REPLAY_COUNT,
    HEADER_REPLAYED_AT,
    HEADER_REPLAYED_FROM_ERROR,
    HEADER_REPLAYS,
    DeadLetter,
    DeadLetterDetail,
)
from shared.ops.deadletters.moves import (
    LetterRef,
    Progress,
    PurgeResult,
    ReplayResult,
    purge,
    replay,
)
from shared.ops.deadletters.queues import EVERYTHING, Selection, list_dead_letters, show_dead_letter

__all__ = [
    "EVERYTHING",
    "HEADER_REPLAYED_AT",
    "HEADER_REPLAYED_FROM_ERROR",
    "HEADER_REPLAYS",
    "HEADER_REPLAY_COUNT",
    "DeadLetter",
    "DeadLetterDetail",
    "LetterRef",
    "Progress",
    "PurgeResult",
    "ReplayResult",
    "Selection",
    "list_dead_letters",
    "purge",
    "replay",
    "show_dead_letter",
]
