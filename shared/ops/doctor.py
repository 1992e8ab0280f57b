"""The watchdog: files that should have reached a final status by now, and where each is stuck
(``sluice doctor``).

A file is *stuck* when its status is one it moves on from by itself
(:data:`shared.status.MOVING`: not final, and not ``corrupted``, which is ``sluice
reconcile``'s business) and was received longer ago than the threshold, or when one
of its messages waits in a dead-letter queue (``files.attention``, set by the commit stage from
``file.dead_lettered``), whatever its age. For each, the last event recorded and a hint of
where it is: a dead-letter queue (and the replay command), the S3-outage fallback, or the stage
whose work queue should hold it next. The count is also the metric ``sluice_files_stuck``
(published by the commit stage).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.adapters.db import CONNECTION_ERRORS
from shared.errors import DatabaseUnavailable
from shared.status import MOVING, FileStatus

_MOVING = sorted(str(status) for status in MOVING)

_STUCK = """
SELECT f.file_id, f.owner, f.original_name, f.status, f.status_reason, f.received_at,
       f.attention, e.event_type AS last_event_type, e.recorded_at AS last_event_at,
       extract(epoch FROM now() - f.received_at) AS age_s
FROM files f
LEFT JOIN LATERAL (
    SELECT event_type, recorded_at FROM file_events
    WHERE file_id = f.file_id ORDER BY recorded_at DESC LIMIT 1
) e ON true
WHERE f.attention IS NOT NULL
   OR (f.status = ANY($1::text[]) AND f.received_at < now() - make_interval(secs => $2))
ORDER BY f.received_at, f.file_id
LIMIT $3
"""

#: Status → the stage whose work queue should hold the file's next message.
_NEXT_STAGE = {
    FileStatus.RECEIVED: "scan",
    FileStatus.SCANNED: "store",
    FileStatus.STORED: "thumbnail",
}


@dataclass(frozen=True)
class StuckFile:
    """One stuck file: who, what status since how long (``age_s``, seconds since received),
    the last event the commit stage recorded, the attention (a dead letter's stage, error and
    time; None if none) and ``where``: a one-line hint for ops."""

    file_id: uuid.UUID
    owner: str
    original_name: str
    status: str
    status_reason: str | None
    received_at: datetime
    age_s: float
    last_event_type: str | None
    last_event_at: datetime | None
    attention: dict[str, Any] | None
    where: str


def where_stuck(file_id: uuid.UUID, status: str, attention: dict[str, Any] | None) -> str:
    """A one-line hint of where a stuck file is, e.g. ``dead-lettered by commit (InvalidData):
    sluice dlq replay --stage commit --file-id …`` or ``expected in the scan stage's queue``."""
    if attention is not None:
        stage = attention.get("stage", "?")
        return (
            f"dead-lettered by {stage} ({attention.get('error_type', '?')}): "
            f"sluice dlq replay --stage {stage} --file-id {file_id}"
        )
    if status == FileStatus.FALLBACK:
        return "kept in PostgreSQL while S3 is down; the fallback worker migrates it back"
    if status == FileStatus.DEFERRED:
        return (
            "in the store dead-letter queue (over the fallback cap): once S3 is back, "
            f"sluice dlq replay --stage store --file-id {file_id}"
        )
    stage = _NEXT_STAGE.get(FileStatus(status)) if status in set(FileStatus) else None
    if stage is None:
        return "unknown"
    return (
        f"expected in the {stage} stage's queue (busy or stopped?); if no queue holds it, "
        f"see sluice dlq list --file-id {file_id}"
    )


async def stuck_files(pool: Any, older_than_s: float, limit: int = 100) -> list[StuckFile]:
    """Up to ``limit`` stuck files (see the module docstring), oldest first.

    Args:
        pool: an asyncpg pool on Sluice's database (``shared.adapters.db.create_pool``).
        older_than_s: seconds since received after which a file that is not final is stuck.

    Raises:
        ValueError: ``older_than_s`` < 0 or ``limit`` < 1.
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    if older_than_s < 0 or limit < 1:
        raise ValueError("older_than_s must be >= 0 and limit >= 1")
    try:
        rows = await pool.fetch(_STUCK, _MOVING, older_than_s, limit)
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
    return [
        StuckFile(
            file_id=row["file_id"],
            owner=row["owner"],
            original_name=row["original_name"],
            status=row["status"],
            status_reason=row["status_reason"],
            received_at=row["received_at"],
            age_s=float(row["age_s"]),
            last_event_type=row["last_event_type"],
            last_event_at=row["last_event_at"],
            attention=row["attention"],
            where=where_stuck(row["file_id"], row["status"], row["attention"]),
        )
        for row in rows
    ]
