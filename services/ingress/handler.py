"""The ingress stage: an upstream service's ``file.received`` → checked → ``file.received`` on
the internal exchange.

Upstream services publish to ``<prefix>.ingress`` only, each as its own RabbitMQ user
(``sluice upstream add``; ``shared.adapters.upstreams``), and set the AMQP ``user_id``
property, which RabbitMQ verifies is the user they logged in as. This stage decides by that user
what the event may name, and passes the event on unchanged but for its cleaned name:

- the message has a ``user_id`` of an active upstream (an unset one would be anyone's word);
- its ``owner`` is one the upstream was given;
- its ``source`` is ``s3://`` in a bucket the upstream was given (never Sluice's own bucket:
  knowing a file's size and SHA-256 must not be enough to copy another owner's object; never
  ``spool://``: the spool is the gateway's);
- its ``size_bytes`` is within the upload policy's largest limit and its ``metadata`` within
  ``SLUICE_GATEWAY_MAX_METADATA_BYTES``, as for an upload;
- its ``original_name`` is cleaned as the gateway cleans names;
- a ``file_id`` the commit stage has recorded already adds a version, only when the file is the
  ``owner``'s: the event gets the next version number (``shared.adapters.versions``, the same
  number again for a redelivered event); another owner's file id is refused
  (docs/files-api.md § Versions).

Anything else raises :class:`~shared.errors.NotAllowed`: the message is dead-lettered in
``<prefix>.ingress.dlq`` with the reason, and nothing reaches the pipeline, the bucket or the
database. What passes goes to the scan stage, which applies the rest of the upload policy to the
bytes (type sniffed, per-type limit) before anything is stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass

import structlog

from shared.adapters.storage import parse_s3_uri
from shared.errors import InvalidSource, NotAllowed
from shared.events import BaseEvent, FileReceived
from shared.ports import UpstreamRegistry, VersionNumbering

log = structlog.get_logger("sluice.ingress")


@dataclass(frozen=True)
class Deps:
    """What the ingress stage checks with: the upstream registry, Sluice's own bucket, the
    buckets any upstream source may be in (``S3_UPSTREAM_BUCKETS``), the largest file and
    metadata an upload may have, bytes, and how names are cleaned."""

    upstreams: UpstreamRegistry
    own_bucket: str
    upstream_buckets: Collection[str]
    max_size_bytes: int
    max_metadata_bytes: int
    clean_name: Callable[[str], str]
    versions: VersionNumbering | None = None


async def handle(event: BaseEvent, user_id: str | None, deps: Deps) -> list[BaseEvent]:
    """Check ``event``, published by RabbitMQ user ``user_id``; return it to publish inside.

    Raises:
        NotAllowed: the publisher may not send it (the reason says why).
        DatabaseUnavailable: the upstream registry cannot be read (the breaker waits).
    """
    if not isinstance(event, FileReceived):  # the run loop takes file.received only
        raise NotAllowed(f"upstream services publish file.received only, not {event.type}")
    if not user_id:
        raise NotAllowed(
            "no user_id property: an upstream service must set it to its RabbitMQ user"
        )
    upstream = await deps.upstreams.lookup(user_id)
    if upstream is None:
        raise NotAllowed(f"{user_id!r} is not an upstream service", user_id=user_id)
    if event.owner not in upstream.owners:
        raise NotAllowed(
            f"upstream {upstream.name!r} may not name owner {event.owner!r}", user_id=user_id
        )
    try:
        bucket, _ = parse_s3_uri(event.source)
    except InvalidSource:
        raise NotAllowed(
            "an upstream source must be s3://<bucket>/<key>", user_id=user_id, source=event.source
        ) from None
    if bucket == deps.own_bucket or bucket not in upstream.buckets:
        raise NotAllowed(
            f"upstream {upstream.name!r} may not read bucket {bucket!r}", user_id=user_id
        )
    if bucket not in deps.upstream_buckets:
        raise NotAllowed(
            f"bucket {bucket!r} is not in S3_UPSTREAM_BUCKETS", user_id=user_id, bucket=bucket
        )
    if event.size_bytes > deps.max_size_bytes:
        raise NotAllowed(
            f"{event.size_bytes} bytes is over the largest upload, {deps.max_size_bytes}",
            user_id=user_id,
        )
    metadata_bytes = len(json.dumps(event.metadata, ensure_ascii=False).encode())
    if metadata_bytes > deps.max_metadata_bytes:
        raise NotAllowed(
            f"metadata is {metadata_bytes} bytes, over the limit of {deps.max_metadata_bytes}",
            user_id=user_id,
        )
    name = deps.clean_name(event.original_name)
    if not name:
        raise NotAllowed("original_name has nothing but control or format characters")
    version = event.version_number
    if deps.versions is not None:
        version = await version_of(event, deps.versions, user_id)
    log.info("ingress.accepted", upstream=upstream.name, owner=event.owner, version=version)
    return [event.model_copy(update={"original_name": name, "version_number": version})]


async def version_of(event: FileReceived, versions: VersionNumbering, user_id: str) -> int:
    """The version ``event`` is: as recorded for an event seen before, the event's own for a
    file not recorded yet, else a new version's reserved number.

    Raises:
        NotAllowed: the file is recorded as another owner's.
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    recorded = await versions.recorded_version(event.event_id)
    if recorded is not None:
        return recorded
    owner = await versions.recorded_owner(event.file_id)
    if owner is None:
        return event.version_number
    if owner != event.owner:
        raise NotAllowed(
            f"file {event.file_id} is not a file of owner {event.owner!r}: an upstream adds "
            "versions only to files of the owner it names",
            user_id=user_id,
            file_id=str(event.file_id),
        )
    return await versions.reserve(event.file_id, owner, event.event_id)
