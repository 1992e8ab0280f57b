"""The ops HTTP API (``/ops/api``, ops keys only): pipeline status and dead-letter operations.

=====  =====================================  ==============================================  =====
verb   path                                   answer                                          scope
=====  =====================================  ==============================================  =====
GET    ``/ops/api/whoami``                    the key's owner and scope                       read
GET    ``/ops/api/status``                    per stage: depth, in flight, consumers, dead    read
                                              letters, rates, p50/p95, circuit breaker
                                              (``collect_status``)
GET    ``/ops/api/dead-letters``              the dead letters matching ``stage``             read
                                              (repeatable), ``error_type``, ``older_than``,
                                              ``file_id``
GET    ``/ops/api/dead-letters/{message_id}`` one dead letter: headers, body, history; 404    read
POST   ``/ops/api/dead-letters/replay``       move the matching ones back to their stage;     admin
                                              at most :data:`MAX_REPLAY_LIMIT` per request
                                              (``dry_run``: only say which; ``ops:read``
                                              may)
POST   ``/ops/api/dead-letters/purge``        remove the matching ones; ``"confirm": true``   admin
                                              and a ``reason`` required
POST   ``/ops/api/gdpr/erasures``             erase an owner (docs/gdpr.md);                  admin
                                              ``"confirm": true``
=====  =====================================  ==============================================  =====

"read": an ``ops:read`` or ``ops:admin`` key; "admin": an ``ops:admin`` key only.
Statuses: 401 no or unknown key, 403 an upload key (or an ``ops:read`` key on an admin route;
``scope="ops:admin"`` in ``WWW-Authenticate``), 400 a purge without ``confirm``, 404 no such
dead letter, 422 bad filters or body, 503 RabbitMQ unreachable (``Retry-After``).
Dead-letter operations of one gateway process run one at a time: a listing holds a whole
dead-letter queue unacknowledged while it reads it (AMQP 0-9-1 has no peek), so two at once
would each see part of it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal, TypeVar, get_args

import aio_pika
import aiormq
import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.gateway.auth import OPS_ADMIN, OpsAdmin, OpsReader, check_scope
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.errors import ApiError, unavailable
from services.gateway.schemas import ErrorBody
from shared.errors import BrokerUnavailable, ConfigError, DatabaseUnavailable, StorageUnavailable
from shared.ops import deadletters
from shared.ops.gdpr import erase_owner
from shared.ops.pipeline import collect_status, default_worker_urls
from shared.topology import DEAD_LETTER_STAGES

log = structlog.get_logger("sluice.gateway.ops")
router = APIRouter(prefix="/ops/api", tags=["ops"])
Deps = Annotated[GatewayDeps, Depends(get_deps)]
T = TypeVar("T")

#: Messages one replay request moves when the body gives no ``limit``.
DEFAULT_REPLAY_LIMIT = 100
#: Most messages one replay request may move; replay more with several requests (or the CLI).
MAX_REPLAY_LIMIT = 1000
#: Longest a replay request may be paced to last (``limit / rate_per_s``), seconds.
MAX_REPLAY_DURATION_S = 60.0
#: Longest one dead-letter operation may take before the request gives up, seconds: a replay
#: at its longest pacing plus the listing around it. Unfinished messages stay dead-lettered.
OPERATION_TIMEOUT_S = MAX_REPLAY_DURATION_S + 30.0
_BROKER_ERRORS = (
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
    403: {"model": ErrorBody, "description": "Not an ops key, or not an ops:admin key."},
    422: {"model": ErrorBody, "description": "Bad filters or body."},
    503: {"model": ErrorBody, "description": "RabbitMQ unreachable."},
}

StageName = Literal[
    "ingress", "scan", "store", "thumbnail", "commit", "purge", "pdftext", "ocr", "video", "mirror"
]
assert set(get_args(StageName)) == set(DEAD_LETTER_STAGES)


def older_than_seconds(text: str) -> float:
    """``"90"``, ``"30s"``, ``"15m"``, ``"24h"``, ``"7d"`` → seconds.

    Raises:
        ValueError: anything else.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90, 30s, 15m, 24h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class Filters(BaseModel):
    """Which dead letters: every field left out = no filter on it."""

    model_config = ConfigDict(extra="forbid")

    stage: list[StageName] | StageName | None = Field(
        None, description="One stage or a list; default every stage's dead-letter queue."
    )
    error_type: str | None = Field(
        None, min_length=1, max_length=200, description="Exact error type, e.g. SourceMissing."
    )
    older_than: str | None = Field(
        None, description="Last failure at least this old: seconds, or 30s, 15m, 24h, 7d."
    )
    file_id: uuid.UUID | None = Field(None, description="Only this file's dead letters.")

    @field_validator("older_than")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            older_than_seconds(value)
        return value

    def selection(self) -> deadletters.Selection:
        """The :class:`Selection` these filters describe."""
        stages = [self.stage] if isinstance(self.stage, str) else self.stage
        return deadletters.Selection(
            stages=tuple(stages) if stages else DEAD_LETTER_STAGES,
            error_type=self.error_type,
            older_than_s=older_than_seconds(self.older_than) if self.older_than else None,
            file_id=str(self.file_id) if self.file_id else None,
        )


class ReplayRequest(Filters):
    """``POST /ops/api/dead-letters/replay``: filters, how many, how fast, or only a dry run."""

    limit: int = Field(
        DEFAULT_REPLAY_LIMIT,
        ge=1,
        le=MAX_REPLAY_LIMIT,
        description=f"Most messages this request moves (at most {MAX_REPLAY_LIMIT}).",
    )
    rate_per_s: float | None = Field(
        None, gt=0, le=10_000, description="Publishes per second; default as fast as confirmed."
    )
    dry_run: bool = Field(False, description="Only say what would be replayed; move nothing.")


class PurgeRequest(Filters):
    """``POST /ops/api/dead-letters/purge``: filters, the reason recorded, and a confirmation."""

    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
    ] = Field(description="Why: recorded in each file's history.")
    confirm: bool = Field(False, description="Must be true: a purge cannot be undone.")


def _query_filters(
    stage: Annotated[
        list[StageName] | None, Query(description="A stage; repeat for several.")
    ] = None,
    error_type: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    older_than: Annotated[str | None, Query(description="Seconds, or 30s, 15m, 24h, 7d.")] = None,
    file_id: Annotated[uuid.UUID | None, Query()] = None,
) -> Filters:
    if older_than is not None:
        try:
            older_than_seconds(older_than)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", f"query.older_than: {exc}") from None
    return Filters(stage=stage, error_type=error_type, older_than=older_than, file_id=file_id)


QueryFilters = Annotated[Filters, Depends(_query_filters)]


def _ops_lock(request: Request) -> asyncio.Lock:
    """The process's dead-letter lock (see the module docstring)."""
    state = request.app.state
    if getattr(state, "ops_lock", None) is None:
        state.ops_lock = asyncio.Lock()
    lock: asyncio.Lock = state.ops_lock
    return lock


async def _reading(request: Request, operator: OpsReader) -> AsyncIterator[None]:
    """Hold the dead-letter lock for the request; the key is checked first, so a request
    without an ops key never waits for it."""
    async with _ops_lock(request):
        yield


async def _changing(request: Request, operator: OpsAdmin) -> AsyncIterator[None]:
    """Hold the dead-letter lock for the request; the key is checked first, so a request
    without an ``ops:admin`` key never waits for it."""
    async with _ops_lock(request):
        yield


Reading = Depends(_reading)
Changing = Depends(_changing)


@router.get("/whoami", responses=_RESPONSES, summary="The key in use: owner and scope")
async def get_whoami(operator: OpsReader) -> dict[str, str]:
    """``{"owner", "scope"}`` of the request's ops key: the page disables what the key may not
    do (``ops:read``: no replay)."""
    return {"owner": operator.owner, "scope": operator.scope}


async def _call(deps: GatewayDeps, operation: Awaitable[T]) -> T:
    """Await a broker operation; RabbitMQ trouble becomes a 503, a missing queue too."""
    connection = deps.connection
    if connection.is_closed or not connection.connected.is_set():
        if asyncio.iscoroutine(operation):
            operation.close()
        raise unavailable(BrokerUnavailable("not connected to RabbitMQ"))
    try:
        return await asyncio.wait_for(operation, OPERATION_TIMEOUT_S)
    except ConfigError as exc:
        raise ApiError(503, "topology_missing", exc.message) from None
    except (BrokerUnavailable, *_BROKER_ERRORS) as exc:
        log.warning("ops.broker_failed", error=repr(exc))
        raise unavailable(BrokerUnavailable(repr(exc))) from None


@router.get("/status", responses=_RESPONSES, summary="Per-stage depths, rates, handling times")
async def get_status(operator: OpsReader, deps: Deps) -> dict[str, Any]:
    """``{"collected_at", "stages": [{"stage", "queue", "ready", "in_flight", "consumers",
    "dead_letters", "rate_in_per_s", "rate_out_per_s", "p50_ms", "p95_ms", "parked", "breaker",
    "breaker_dependency", "breaker_since", "breaker_last_error"}], "problems"}``:
    rates per second and times in milliseconds over the last minute, ``null`` when unknown."""
    status = collect_status(deps.settings, deps.topology, default_worker_urls(deps.settings))
    return (await _call(deps, status)).as_json()


@router.get(
    "/dead-letters",
    responses=_RESPONSES,
    dependencies=[Reading],
    summary="List dead letters (nothing consumed or reordered)",
)
async def get_dead_letters(
    operator: OpsReader, deps: Deps, filters: QueryFilters
) -> dict[str, Any]:
    """``{"count": n, "dead_letters": [...]}``, stage by stage, head of each queue first."""
    listing = deadletters.list_dead_letters(deps.connection, deps.topology, filters.selection())
    letters = await _call(deps, listing)
    return {"count": len(letters), "dead_letters": jsonable_encoder(letters)}


@router.get(
    "/dead-letters/{message_id}",
    responses={**_RESPONSES, 404: {"model": ErrorBody, "description": "No such dead letter."}},
    dependencies=[Reading],
    summary="One dead letter: properties, headers, body, history",
)
async def get_dead_letter(message_id: str, operator: OpsReader, deps: Deps) -> dict[str, Any]:
    """The whole dead letter whose message id (the event id) is ``message_id``."""
    found = deadletters.show_dead_letter(deps.connection, deps.topology, message_id)
    detail = await _call(deps, found)
    if detail is None:
        raise ApiError(404, "not_found", f"no dead-letter queue holds message {message_id}")
    result: dict[str, Any] = jsonable_encoder(detail)
    return result


@router.post(
    "/dead-letters/replay",
    responses=_RESPONSES,
    summary="Move matching dead letters back to their stage (or dry-run)",
)
async def post_replay(
    body: ReplayRequest, operator: OpsReader, request: Request, deps: Deps
) -> dict[str, Any]:
    """Replays at most ``limit`` matching dead letters, acked from the dead-letter queue only
    after RabbitMQ confirms their copy; with ``dry_run`` moves nothing. A replay needs an
    ``ops:admin`` key; a dry run changes nothing, so an ``ops:read`` key may ask for one."""
    if not body.dry_run:
        check_scope(operator, OPS_ADMIN)
    if body.rate_per_s is not None and body.limit / body.rate_per_s > MAX_REPLAY_DURATION_S:
        raise ApiError(
            422,
            "invalid_request",
            f"limit / rate_per_s is {body.limit / body.rate_per_s:.0f} s; one request may last "
            f"at most {MAX_REPLAY_DURATION_S:.0f} s: lower the limit or raise the rate",
        )
    replay = deadletters.replay(
        deps.connection,
        deps.topology,
        body.selection(),
        settings=deps.settings.amqp,
        limit=body.limit,
        rate_per_s=body.rate_per_s,
        dry_run=body.dry_run,
    )
    async with _ops_lock(request):  # after the scope check: a refused key never waits
        result = await _call(deps, replay)
    log.info("ops.replay", operator=operator.owner, dry_run=body.dry_run, filters=_logged(body))
    answer: dict[str, Any] = jsonable_encoder(result)
    return answer


@router.post(
    "/dead-letters/purge",
    responses={**_RESPONSES, 400: {"model": ErrorBody, "description": "`confirm` not true."}},
    dependencies=[Changing],
    summary="Remove matching dead letters (recorded in each file's history)",
)
async def post_purge(body: PurgeRequest, operator: OpsAdmin, deps: Deps) -> dict[str, Any]:
    """Removes every matching dead letter; refused (400 ``confirm_required``) without
    ``"confirm": true``."""
    if not body.confirm:
        raise ApiError(
            400,
            "confirm_required",
            'a purge cannot be undone: send "confirm": true (dry-run a replay to see the matches)',
        )
    purge = deadletters.purge(
        deps.connection,
        deps.topology,
        body.selection(),
        settings=deps.settings.amqp,
        reason=f"{body.reason} (by {operator.owner})",
    )
    result = await _call(deps, purge)
    log.info("ops.purge", operator=operator.owner, reason=body.reason, filters=_logged(body))
    answer: dict[str, Any] = jsonable_encoder(result)
    return answer


def _logged(body: Filters) -> dict[str, Any]:
    logged: dict[str, Any] = jsonable_encoder(body, include=set(Filters.model_fields))
    return logged


class ErasureRequest(BaseModel):
    """Body of ``POST /ops/api/gdpr/erasures``."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="The owner to erase."
    )
    confirm: bool = Field(False, description="Must be true: an erasure cannot be undone.")


@router.post(
    "/gdpr/erasures",
    responses={
        **_RESPONSES,
        400: {"model": ErrorBody, "description": "`confirm` not true."},
        503: {"model": ErrorBody, "description": "PostgreSQL, RabbitMQ or S3 unreachable."},
    },
    summary="Erase every byte and personal field of an owner; returns the erasure receipt",
)
async def post_erasure(body: ErasureRequest, operator: OpsAdmin, deps: Deps) -> dict[str, Any]:
    """As ``sluice gdpr erase --owner X`` (docs/gdpr.md): ``{"erasure_id", "owner_sha256",
    "requested_by", "started_at", "finished_at", "counts"}``, also stored in
    ``gdpr_erasures``. ``counts.rows_left`` > 0: the commit stage had not removed every row
    within 60 s; send the request again."""
    if not body.confirm:
        raise ApiError(400, "confirm_required", 'an erasure cannot be undone: send "confirm": true')
    try:
        receipt = await erase_owner(
            deps.settings, body.owner, requested_by=f"ops-api:{operator.owner}"
        )
    except (BrokerUnavailable, DatabaseUnavailable, StorageUnavailable) as exc:
        raise unavailable(exc) from None
    log.info("ops.gdpr_erasure", operator=operator.owner, erasure_id=str(receipt.erasure_id))
    return receipt.as_json()
