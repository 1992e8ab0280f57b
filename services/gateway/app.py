"""The gateway's FastAPI app: wiring, health and readiness, and running it with uvicorn.

The lifespan opens, in order, the PostgreSQL pool, a robust RabbitMQ connection with a confirm-mode
:class:`~shared.adapters.broker.Publisher` (declaring the topology), the S3 client, the spool and
the event outbox with its relay task; they are closed in reverse order at shutdown. PostgreSQL and
RabbitMQ must be reachable at start (the process stops otherwise); afterwards the gateway keeps
taking uploads while either is away (events wait in the outbox, keys come from the key cache),
and S3 is only needed to read files back.

``/readyz`` answers whether this gateway can take uploads: 200 ``ready`` when every dependency
answers, 200 ``degraded`` when RabbitMQ, PostgreSQL or S3 does not but uploads still go on (a
load balancer keeps sending them), 503 ``not_ready`` when uploads would be refused (the outbox
at its bound). Which dependency failed, and how, is for operators: the body names each check
only for a request with a valid ``ops`` key; anyone else (a probe, a load balancer, a bad key)
gets the bare status, never a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import Span
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics

from services.gateway import (
    edits,
    errors,
    files,
    keys,
    objects,
    ops_api,
    ops_page,
    rendering,
    streams,
    texts,
    tus,
    upload,
    upload_page,
    versions,
    videos,
)
from services.gateway.access import AccessLog
from services.gateway.auth import OPS_READ, authenticate_request
from services.gateway.deletion import router as deletion_router
from services.gateway.deps import GatewayDeps
from services.gateway.edge import BodyDeadline, edge_protocol
from services.gateway.keys import KeyCache
from services.gateway.relay import OutboxRelay
from services.gateway.renditions import Renditions
from services.gateway.slots import OwnerSlots
from shared.adapters import broker, db
from shared.adapters.object_storage import open_object_storage, url_signer
from shared.adapters.outbox import EventOutbox
from shared.adapters.row_cipher import RowCipher
from shared.adapters.spools import open_spools
from shared.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    GatewayStartError,
    OutboxFull,
    StorageUnavailable,
)
from shared.policy import UploadPolicy
from shared.settings import Settings
from shared.telemetry.health import metrics_endpoint
from shared.telemetry.logging import Redactor
from shared.topology import Topology

log = structlog.get_logger("sluice.gateway")

#: Longest a single readiness check may take, seconds.
READY_CHECK_TIMEOUT_S = 3.0
#: Readiness checks whose failure means uploads are refused (503); the others only degrade.
#: ``quarantine`` is checked only with the S3 spool (``SLUICE_SPOOL_BACKEND=s3``).
REFUSING_CHECKS = frozenset({"outbox", "quarantine"})
#: The scopes of the keys that see ``/readyz``'s checks: any ops key.
READINESS_DETAIL_SCOPES: tuple[keys.Scope, ...] = OPS_READ
_UNTRACED_HANDLERS = ("/healthz", "/readyz")
_UNTRACED_URLS = ",".join(path.lstrip("/") for path in _UNTRACED_HANDLERS)
#: prometheus-fastapi-instrumentator's request metrics (``http_requests_total``,
#: ``http_request_duration_seconds``, request and response sizes), created once per process
#: (a second app in the same process shares them rather than registering them again).
_HTTP_METRICS = http_metrics.default()
_REDACTOR = Redactor()


async def open_deps(settings: Settings, stack: contextlib.AsyncExitStack) -> GatewayDeps:
    """Open every dependency; each is closed when ``stack`` closes.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
        BrokerUnavailable: RabbitMQ unreachable, or the topology cannot be declared.
        ConfigError: SLUICE_FALLBACK_ENCRYPTION_KEYS or _KEY_ID malformed; no
            SLUICE_STORAGE_SIGNING_SECRET and no signing key file can be had
            (:func:`~shared.adapters.object_storage.url_signer`).
    """
    pool = await db.create_pool(settings.database)
    stack.push_async_callback(pool.close)
    connection = await broker.connect(settings.amqp)
    stack.push_async_callback(connection.close)
    topology = Topology(prefix=settings.amqp.prefix, delivery_limit=settings.amqp.delivery_limit)
    try:
        publisher = await broker.Publisher.create(connection, settings.amqp, topology)
    except Exception as exc:
        raise BrokerUnavailable(f"cannot declare the topology: {exc!r}") from exc
    storage = await stack.enter_async_context(open_object_storage(settings))
    spools = await stack.enter_async_context(
        open_spools(settings, min_free_bytes=settings.spool.min_free_bytes)
    )
    if settings.spool.backend == "s3":
        try:
            await spools.quarantine.ensure_bucket()
        except StorageUnavailable as exc:  # uploads are answered 503 until S3 is back
            log.warning("gateway.quarantine_unavailable", error=str(exc))
    RowCipher.from_settings(settings.fallback)  # a bad SLUICE_FALLBACK_ENCRYPTION_* stops here
    signer = url_signer(settings)  # no secret and no key file: stops here
    outbox = EventOutbox(settings.spool.dir, settings.gateway.outbox_max_events)
    deps = GatewayDeps(
        settings=settings,
        pool=pool,
        connection=connection,
        publisher=publisher,
        storage=storage,
        spool=spools,
        topology=topology,
        policy=UploadPolicy.from_settings(settings.gateway),
        outbox=outbox,
        relay=OutboxRelay(outbox, publisher, connected=lambda: deps.broker_connected()),
        keys=KeyCache(
            settings.gateway.key_cache_ttl_s, settings.gateway.key_cache_stale_if_error_s
        ),
        uploads=OwnerSlots(settings.gateway.max_concurrent_uploads_per_owner),
        renditions=Renditions(settings.render, settings.thumbnail),
        signer=signer,
    )
    stack.push_async_callback(deps.renditions.close)
    connection.reconnect_callbacks.add(deps.relay.reconnected)
    stop_relay = asyncio.Event()
    relaying = asyncio.create_task(deps.relay.run(stop_relay), name="outbox-relay")

    async def stop() -> None:
        stop_relay.set()
        await relaying

    stack.push_async_callback(stop)
    if settings.tus.clean_interval_s > 0:
        stop_cleaner = asyncio.Event()
        cleaning = asyncio.create_task(
            tus.clean_periodically(spools.uploads, settings.tus.clean_interval_s, stop_cleaner),
            name="tus-cleaner",
        )

        async def stop_cleaning() -> None:
            stop_cleaner.set()
            await cleaning

        stack.push_async_callback(stop_cleaning)
    return deps


async def check_readiness(deps: GatewayDeps) -> dict[str, str]:
    """Each check's state: ``"ok"`` or what failed (``database``, ``broker``, ``storage``,
    ``outbox``, and with the S3 spool ``quarantine``: the quarantine bucket, without which
    uploads are refused)."""

    async def database() -> None:
        await deps.pool.fetchval("SELECT 1")

    async def amqp() -> None:
        if deps.connection.is_closed or not deps.connection.connected.is_set():
            raise BrokerUnavailable("not connected (reconnecting)")

    async def outbox() -> None:
        waiting = await asyncio.to_thread(deps.outbox.size)
        if waiting >= deps.outbox.max_events:
            raise OutboxFull(f"{waiting} events wait (limit {deps.outbox.max_events})")

    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "database": database,
        "broker": amqp,
        "storage": deps.storage.ping,
        "outbox": outbox,
    }
    if deps.settings.spool.backend == "s3":
        checks["quarantine"] = deps.spool.quarantine.ping

    async def run(check: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(check(), READY_CHECK_TIMEOUT_S)
        except TimeoutError:
            return f"timed out after {READY_CHECK_TIMEOUT_S} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    results = await asyncio.gather(*(run(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))


async def may_see_checks(request: Request, deps: GatewayDeps) -> bool:
    """Whether the request carries a valid key of :data:`READINESS_DETAIL_SCOPES`.

    Never raises: no key, a malformed, unknown or revoked one, a key of another scope, or a
    key that cannot be verified within :data:`READY_CHECK_TIMEOUT_S` (PostgreSQL away and the
    key not cached) are all ``False``.
    """
    if "authorization" not in request.headers:
        return False
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            await authenticate_request(request, deps, READINESS_DETAIL_SCOPES)
    except (errors.ApiError, DatabaseUnavailable, TimeoutError):
        return False
    return True


def create_app(settings: Settings) -> FastAPI:
    """The gateway app; its lifespan opens (and closes) every connection it needs.

    Raises (at startup, from the lifespan):
        DatabaseUnavailable, BrokerUnavailable: PostgreSQL or RabbitMQ unreachable.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                app.state.deps = await open_deps(settings, stack)
                app.state.streams = await stack.enter_async_context(streams.open_streams(settings))
            except BaseException as exc:
                app.state.startup_error = exc
                log.error("gateway.start_failed", error=str(exc))
                raise
            log.info("gateway.started", prefix=settings.amqp.prefix, spool=str(settings.spool.dir))
            yield
            log.info("gateway.stopping")

    app = FastAPI(
        title="Sluice gateway",
        version="1",
        summary="Upload files into the Sluice pipeline and follow them through it.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    app.state.startup_error = None
    errors.install(app)
    app.add_middleware(AccessLog)
    app.add_middleware(BodyDeadline, read_timeout_s=settings.gateway.body_read_timeout_s)
    app.add_middleware(tus.TusEdge, origins=settings.tus.cors_origins)
    instrument(app)
    app.include_router(upload.router)
    app.include_router(tus.router)
    app.include_router(rendering.router)
    app.include_router(files.router)
    app.include_router(texts.router)
    app.include_router(videos.router)
    app.include_router(versions.router)
    app.include_router(edits.router)
    app.include_router(deletion_router)
    app.include_router(objects.router)
    app.include_router(streams.router)
    app.include_router(ops_api.router)
    app.include_router(ops_page.router)
    app.include_router(upload_page.router)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: whether this gateway can take uploads")
    async def readyz(request: Request) -> JSONResponse:
        deps = app.state.deps
        checks, detailed = await asyncio.gather(
            check_readiness(deps), may_see_checks(request, deps)
        )
        failed = [name for name, result in checks.items() if result != "ok"]
        blocking = [name for name in failed if name in REFUSING_CHECKS]
        if blocking and detailed:
            return errors.error_response(
                503,
                "not_ready",
                f"not ready: {', '.join(blocking)}",
                extra={"status": "not_ready", "checks": checks},
            )
        if blocking:
            return JSONResponse({"status": "not_ready"}, status_code=503)
        status = "degraded" if failed else "ready"
        return JSONResponse({"status": status, **({"checks": checks} if detailed else {})})

    return app


def _redact_span(span: Span, _: dict[str, Any]) -> None:
    """Mask secret shapes (an API key pasted into a URL, a presigned signature) in the request
    span's attributes, as the logs do (:class:`shared.telemetry.logging.Redactor`)."""
    attributes = getattr(span, "attributes", None) or {}
    for key, value in attributes.items():
        if isinstance(value, str) and (masked := _REDACTOR.redact(value)) != value:
            span.set_attribute(key, masked)


def instrument(app: FastAPI) -> None:
    """Traces and Prometheus metrics for ``app``.

    - a SERVER span per request (``opentelemetry-instrumentation-fastapi``; a client's own
      ``traceparent`` is continued), the upload's being the root of the file's trace; no
      spans for the probes, nor for each ASGI receive/send of a body; secret shapes in its
      attributes masked;
    - the ``http_*`` request metrics in this process's registry. They are not served here:
      :func:`serve` serves ``/metrics`` on ``SLUICE_GATEWAY_METRICS_PORT``, off the public
      port (docs/observability.md).
    """
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=_UNTRACED_URLS,
        exclude_spans=["receive", "send"],
        server_request_hook=_redact_span,
    )
    Instrumentator(excluded_handlers=list(_UNTRACED_HANDLERS)).add(_HTTP_METRICS).instrument(app)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller stops it through an event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, stop: asyncio.Event, *, app: FastAPI | None = None) -> None:
    """Serve the gateway on ``settings.gateway.host:port``, and this process's Prometheus
    ``/metrics`` on ``metrics_host:metrics_port`` (unless that port is 0), until ``stop`` is
    set.

    In-flight requests finish first (uvicorn's graceful shutdown). Signals are left to the
    caller, which runs this next to the workers in one process. Slow and surplus clients are
    cut off by the timeouts and limits of ``settings.gateway`` (:mod:`services.gateway.edge`).

    Raises:
        GatewayStartError: the lifespan failed (cause attached) or an address is taken.
    """
    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.amqp.shutdown_timeout_s),
        http=edge_protocol(settings.gateway.header_timeout_s),
        limit_concurrency=settings.gateway.limit_concurrency,
        timeout_keep_alive=settings.gateway.keep_alive_timeout_s,
    )
    server = _Server(config)

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits on a failed startup or a taken port
            cause = getattr(app.state, "startup_error", None)
            if cause is None:  # the lifespan started: close what it opened
                with contextlib.suppress(Exception):
                    await server.lifespan.shutdown()
            where = f"{settings.gateway.host}:{settings.gateway.port}"
            message = f"gateway could not start on {where}" + (f": {cause}" if cause else "")
            raise GatewayStartError(message) from cause

    async with contextlib.AsyncExitStack() as stack:
        host, port = settings.gateway.metrics_host, settings.gateway.metrics_port
        if port:
            try:
                await stack.enter_async_context(metrics_endpoint(host, port))
            except OSError as exc:
                message = f"gateway metrics could not start on {host}:{port}: {exc}"
                raise GatewayStartError(message) from exc
        task = asyncio.create_task(run())
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            streams.close_streams(app)  # or the graceful shutdown would wait for them
            server.should_exit = True
            waiter.cancel()
            await task
