"""The notice the commit stage sends when it records an event of a file, and how it is read.

The commit stage, the only writer of ``file_events``, numbers each file's events 1, 2, 3, …
(column ``seq``, in the order recorded) and, in the same transaction, sends a PostgreSQL
``NOTIFY`` on :data:`CHANNEL` whose payload is a :class:`HistoryNotice`: the file id and the
new ``seq``, nothing about the file's owner or content. PostgreSQL delivers a notification only
if its transaction commits, in commit order (PostgreSQL docs, ``NOTIFY``), and limits a payload
to 8000 bytes; this one is about 70.

A notice is a wake-up, not the data: a listener (the gateway's event streams) reads the rows of
``file_events`` with ``seq`` past the last one it sent, so a notice it missed (its connection
dropped) costs nothing once it reads again.
"""

from __future__ import annotations

import uuid
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.events import FileCommitted

#: The last event of a file's progress: the commit stage records it with the final status
#: (``available`` or ``rejected``); a file's event stream ends with it.
LAST_EVENT_TYPE: Final[str] = FileCommitted.model_fields["type"].default

#: The one channel every ``file_events`` notice is sent on (per database).
CHANNEL: Final = "sluice_file_events"
#: Namespace of the transaction-level advisory lock that numbers a file's events (the second
#: key of ``hashtextextended(file_id::text, HISTORY_LOCK_SEED)``).
HISTORY_LOCK_SEED: Final = 0x5E9


class HistoryNotice(BaseModel):
    """``{"file_id": "<uuid>", "seq": <int>}``: event number ``seq`` of ``file_id`` is
    recorded (and so is every smaller one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file_id: uuid.UUID = Field(description="The file whose history grew.")
    seq: int = Field(ge=1, description="The event's number in the file's history, from 1.")


def parse_notice(payload: str) -> HistoryNotice:
    """The notice in a ``NOTIFY`` payload.

    Raises:
        ValueError: not a :class:`HistoryNotice` in JSON (the message says what is wrong).
    """
    try:
        return HistoryNotice.model_validate_json(payload)
    except ValidationError as exc:
        raise ValueError(f"not a file_events notice: {payload[:200]!r}: {exc}") from None
