"""Typed settings, read once from the environment at start and passed down.

Every field names its unit and has bounds; :func:`load` turns a validation failure into a
:class:`~shared.errors.ConfigError` that names the environment variable, so a bad value stops the
process at start with a message ops can act on.

The S3 variables keep the names of source document 000 (``S3_ENDPOINT, S3_ACCESS_KEY,
S3_SECRET_KEY, S3_BUCKET_NAME, S3_REGION, S3_FORCE_PATH_STYLE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError
from shared.transform_settings import OcrSettings, PdfTextSettings, TextSettings, VideoSettings

MiB = 1024 * 1024


class AmqpSettings(BaseSettings):
    """RabbitMQ connection, topology prefix, prefetch and retry policy (``SLUICE_AMQP_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_AMQP_", frozen=True)

    url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/", description="AMQP 0-9-1 URL of the broker."
    )
    prefix: str = Field(
        "sluice",
        pattern=r"^[a-z][a-z0-9_-]{0,30}$",
        description="Prefix of every exchange and queue name; tests use their own.",
    )
    prefetch_count: int = Field(8, ge=1, le=1000, description="Unacked deliveries per consumer.")
    publish_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Longest wait for a publisher confirm."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=50,
        description="Attempts before a retryable failure dead-letters (seed 000).",
    )
    retry_base_delay_s: float = Field(
        1.0, gt=0, le=3600, description="First backoff delay; doubles each attempt, equal jitter."
    )
    retry_max_delay_s: float = Field(60.0, gt=0, le=86400, description="Backoff ceiling.")
    delivery_limit: int = Field(
        5, ge=1, le=1000, description="Quorum-queue redeliveries before a crash loop dead-letters."
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Longest wait for in-flight messages on SIGTERM."
    )

    @property
    def user(self) -> str:
        """The RabbitMQ user of :attr:`url` (``guest`` when it names none)."""
        return unquote(urlsplit(self.url).username or "guest")


class BreakerSettings(BaseSettings):
    """The stages' circuit breakers (``SLUICE_BREAKER_*``, ``shared.breaker``): how a
    dependency that is down (clamd, PostgreSQL, S3) is probed until it answers."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_BREAKER_", frozen=True)

    probe_base_delay_s: float = Field(
        0.5,
        gt=0,
        le=600,
        description="Wait before the first probe of a dependency that is down; doubles after "
        "each failed probe, equal jitter.",
    )
    probe_max_delay_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Ceiling of the wait between probes: a stage resumes at most about this "
        "long after its dependency is back.",
    )
    probe_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Longest wait for a probe's answer (clamd PING, PostgreSQL SELECT 1, S3 "
        "HeadBucket).",
    )
    park_delay_s: float = Field(
        1.0,
        gt=0,
        le=300,
        description="Time in the stage's wait queue of a message given back while its "
        "breaker is open (no attempt spent).",
    )


class S3Settings(BaseSettings):
    """S3-compatible object storage (``S3_*``, names from source document 000)."""

    model_config = SettingsConfigDict(env_prefix="S3_", frozen=True)

    endpoint: str = Field("http://127.0.0.1:8333", description="S3 endpoint URL (MinIO, AWS).")
    access_key: str = Field("sluice", min_length=1, description="S3 access key id.")
    secret_key: str = Field("sluice-secret-key", min_length=1, description="S3 secret key.")
    bucket_name: str = Field(
        "sluice",
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="Bucket for originals and thumbnails (one per environment, seed 003).",
    )
    region: str = Field("us-east-1", min_length=1, description="S3 region name.")
    force_path_style: bool = Field(True, description="Path-style addressing (MinIO, SeaweedFS).")
    multipart_threshold_bytes: int = Field(
        8 * MiB, ge=5 * MiB, description="Objects at least this big use a multipart upload."
    )
    part_size_bytes: int = Field(
        8 * MiB, ge=5 * MiB, le=5 * 1024 * MiB, description="Multipart part size."
    )
    upstream_buckets: tuple[str, ...] = Field(
        (),
        description="Other buckets `s3://` sources of upstream events may name (JSON list).",
    )
    presign_ttl_s: int = Field(
        900, ge=1, le=7 * 24 * 3600, description="Lifetime of presigned GET URLs."
    )
    timeout_s: float = Field(30.0, gt=0, le=600, description="Connect and read timeout.")
    sse: Literal["", "AES256", "aws:kms"] = Field(
        "",
        description="Server-side encryption asked on every PutObject, CopyObject and "
        "CreateMultipartUpload (seed 000: AES-256 at rest): AES256 (SSE-S3), aws:kms (SSE-KMS, "
        "with S3_SSE_KMS_KEY_ID), or empty for none. docs/storage.md lists which servers "
        "honour it; the store stage checks at start that the server does.",
    )
    sse_kms_key_id: str = Field(
        "",
        max_length=2048,
        description="KMS key id or ARN for S3_SSE=aws:kms (empty: the server's default key).",
    )

    @field_validator("sse_kms_key_id")
    @classmethod
    def _kms_key_needs_kms(cls, value: str, info: ValidationInfo) -> str:
        if value and info.data.get("sse") != "aws:kms":
            raise ValueError("a KMS key id is only used with S3_SSE=aws:kms")
        return value


class MirrorSettings(BaseSettings):
    """The backup mirror (``SLUICE_MIRROR_*``; seed 001: backup by mirror): a second S3
    endpoint and bucket to which the ``mirror`` consumer copies every available file's objects.
    Other S3 options (path style, timeouts, ``S3_SSE``) are the main store's."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_MIRROR_", frozen=True)

    enabled: bool = Field(False, description="Run the mirror consumer (`sluice run`).")
    endpoint: str = Field("http://127.0.0.1:8334", description="The mirror's S3 endpoint URL.")
    access_key: str = Field("sluice", min_length=1, description="The mirror's S3 access key id.")
    secret_key: str = Field(
        "sluice-secret-key", min_length=1, description="The mirror's S3 secret key."
    )
    bucket: str = Field(
        "sluice-mirror",
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="The mirror's bucket (created at the consumer's start if missing).",
    )
    region: str = Field("us-east-1", min_length=1, description="The mirror's S3 region.")

    def s3(self, main: S3Settings) -> S3Settings:
        """``main`` pointed at the mirror: its endpoint, key pair, bucket and region."""
        return main.model_copy(
            update={
                "endpoint": self.endpoint,
                "access_key": self.access_key,
                "secret_key": self.secret_key,
                "bucket_name": self.bucket,
                "region": self.region,
                "upstream_buckets": (),
            }
        )


class DatabaseSettings(BaseSettings):
    """PostgreSQL (``SLUICE_DATABASE_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_DATABASE_", frozen=True)

    url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/sluice",
        description="libpq URL; `sluice migrate` creates the database if it is missing.",
    )
    pool_max_size: int = Field(10, ge=1, le=200, description="Connections per process.")
    command_timeout_s: float = Field(30.0, gt=0, le=600, description="Per-statement timeout.")


class SpoolSettings(BaseSettings):
    """Where the gateway parks uploaded bytes until they are stored (``SLUICE_SPOOL_*``): a
    local directory (``spool://`` references) or an S3 quarantine bucket (``quarantine://``),
    docs/architecture.md § The spool."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_SPOOL_", frozen=True)

    backend: Literal["local", "s3"] = Field(
        "local",
        description="Where the gateway spools new uploads: local (the directory SLUICE_SPOOL_DIR) "
        "or s3 (the quarantine bucket SLUICE_SPOOL_S3_BUCKET, on the S3 of S3_*). Every process "
        "reads both kinds of reference whatever this says.",
    )
    s3_bucket: str = Field(
        "sluice-quarantine",
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="The quarantine bucket: uploads wait there, unscanned, until the store stage "
        "promotes them to S3_BUCKET_NAME (server-side copy) and the commit stage removes them.",
    )
    s3_single_put_max_bytes: int = Field(
        8 * MiB,
        ge=5 * MiB,
        le=5 * 1024 * MiB,
        description="Largest upload sent to the quarantine bucket in one PutObject, bytes: such "
        "a file is held in memory whole, and is promoted with its S3 checksum checked; a bigger "
        "one is a multipart upload (these bytes its first part), read back after promotion to "
        "check its SHA-256.",
    )
    s3_part_size_bytes: int = Field(
        5 * MiB,
        ge=5 * MiB,
        le=5 * 1024 * MiB,
        description="Part size of a multipart upload into the quarantine bucket, bytes (after "
        "the first part, which is SLUICE_SPOOL_S3_SINGLE_PUT_MAX_BYTES): a multipart upload "
        "holds at most (SLUICE_SPOOL_S3_PARTS_IN_FLIGHT + 2) parts in memory.",
    )
    s3_parts_in_flight: int = Field(
        2,
        ge=1,
        le=16,
        description="Parts of one multipart upload into the quarantine bucket sent at once while "
        "the next fills (1: one at a time, the client's body waiting on each UploadPart).",
    )
    dir: Path = Field(
        Path(".sluice/spool"),
        description="Spool directory, shared by the stages; with the s3 backend it still holds "
        "the gateway's event outbox (.outbox/).",
    )
    chunk_bytes: int = Field(256 * 1024, ge=4096, le=64 * MiB, description="Read/write chunk size.")
    min_free_bytes: int = Field(
        256 * MiB,
        ge=0,
        description="Free-space floor of the spool's disk, bytes: the gateway answers 507 to an "
        "upload that would leave less free (0: only a full disk refuses).",
    )

    @field_validator("dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class ClamdSettings(BaseSettings):
    """clamd over TCP (``SLUICE_CLAMD_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_CLAMD_", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="clamd TCP address.")
    port: int = Field(3310, ge=1, le=65535, description="clamd TCP port.")
    timeout_s: float = Field(60.0, gt=0, le=600, description="Longest wait for a verdict.")


class GatewaySettings(BaseSettings):
    """HTTP gateway and the upload policy of source document 000 (``SLUICE_GATEWAY_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_GATEWAY_", frozen=True)

    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(8080, ge=1, le=65535, description="Listen port.")
    metrics_host: str = Field(
        "127.0.0.1", description="Listen address of the gateway's /metrics (its own port)."
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Serve the gateway's Prometheus /metrics at this port, apart from the "
        "public one (docs/observability.md); 0: serve it nowhere.",
    )
    limit_concurrency: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Connections and requests in progress in this process past which a new "
        "request is answered 503 at once (uvicorn's limit_concurrency).",
    )
    keep_alive_timeout_s: int = Field(
        5,
        ge=1,
        le=300,
        description="Seconds an idle keep-alive connection is kept between two requests.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a client has to send a request's headers, from their first byte "
        "(from connecting, for the first request); past it 408 and the connection is closed.",
    )
    body_read_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Longest wait for the next chunk of a request body, seconds; past it 408 "
        "request_timeout, the connection closed and an upload's partial spool file removed.",
    )
    max_image_bytes: int = Field(10 * MiB, ge=1, description="Largest image upload (seed 000).")
    max_pdf_bytes: int = Field(5 * MiB, ge=1, description="Largest PDF upload (seed 000).")
    max_video_bytes: int = Field(
        60 * MiB,
        ge=1,
        description="Largest video upload (MP4, QuickTime, WebM; seed 002: HLS streaming), "
        "bytes; keep it below clamd's StreamMaxLength (64 MiB in the development config), else "
        "a larger video is never scanned (docs/transforms.md).",
    )
    max_metadata_bytes: int = Field(16 * 1024, ge=2, description="Largest `metadata` JSON.")
    max_concurrent_uploads_per_owner: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Uploads one owner may have in progress on this process; past it 429 "
        "too_many_uploads (per process: N gateways let an owner have N times as many).",
    )
    outbox_max_events: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Events kept in the outbox while RabbitMQ is away; past it an upload is "
        "answered 503 (docs/gateway.md).",
    )
    key_cache_ttl_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds a verified API key is trusted without asking PostgreSQL again; a "
        "revoked key stops working within it. 0 turns the cache off.",
    )
    key_cache_stale_if_error_s: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Seconds past the TTL a cached key is still trusted while PostgreSQL is "
        "unreachable (RFC 5861's stale-if-error); 0 refuses as soon as the TTL has passed.",
    )


# -- tus resumable uploads (``/v1/uploads/``, docs/uploads.md) ---------------------------------


class TusSettings(BaseSettings):
    """Resumable uploads over tus 1.0 (``SLUICE_TUS_*``): how long an unfinished upload is
    kept, how often expired ones are cleaned, which browser origins may use them."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_TUS_", frozen=True)

    expiry_s: int = Field(
        24 * 3600,
        ge=60,
        le=30 * 86400,
        description="Lifetime of an upload from its creation, seconds (tus expiration: "
        "Upload-Expires); past it the upload answers 410 and the cleaner removes its bytes.",
    )
    clean_interval_s: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="How often each gateway removes expired uploads, seconds (0: never; "
        "`sluice spool clean` does it too).",
    )
    cors_origins: tuple[str, ...] = Field(
        ("*",),
        description="Origins browsers may send tus requests from (CORS on /v1/uploads only; "
        "empty: none). Keys are bearer tokens, never cookies, so * lends a page nothing.",
    )


class ThumbnailSettings(BaseSettings):
    """Thumbnail sizes and decoder limits (``SLUICE_THUMBNAIL_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_THUMBNAIL_", frozen=True)

    sizes_px: tuple[int, ...] = Field(
        (256, 1024), min_length=1, description="Long sides of the thumbnails, pixels."
    )
    max_pixels: int = Field(
        50_000_000, ge=1, description="Decompression-bomb limit: width x height, pixels."
    )
    webp_quality: int = Field(80, ge=1, le=100, description="WebP quality, 1-100.")
    jpeg_quality: int = Field(80, ge=1, le=100, description="JPEG quality, 1-100.")
    jpeg_min_size_px: int = Field(
        512,
        ge=16,
        le=8192,
        description="Thumbnails of this long side or more are JPEG (the 1024 px preview), unless "
        "the image has transparency; smaller ones are WebP. Pixels.",
    )
    max_concurrent_renders: int = Field(
        2,
        ge=1,
        le=64,
        description="Images decoded at once per process; bounds memory (~250 MiB each at the "
        "pixel limit). The worker renders at least as many at once as it has render processes.",
    )
    processes: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Render processes per thumbnail worker; unset: one per CPU core the worker "
        "may use; 0: render in threads of the worker (faster, but a decoder crash kills it).",
    )
    max_tasks_per_child: int = Field(
        200,
        ge=1,
        le=1_000_000,
        description="Images per render process before the processes are replaced by new ones "
        "(memory stays flat).",
    )
    max_crashes: int = Field(
        2,
        ge=1,
        le=10,
        description="Render processes an image may kill (a decoder crash) before it gets a "
        "permanent thumbnail_error; after the first it is rendered alone.",
    )
    render_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest a render process may spend on one image, seconds; past it the "
        "process is killed and counted as a crash (an image that hangs its decoder gets "
        "thumbnail_error 'decoder timed out' after SLUICE_THUMBNAIL_MAX_CRASHES).",
    )

    @field_validator("sizes_px")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(size < 16 or size > 8192 for size in value):
            raise ValueError("each size must be between 16 and 8192 pixels")
        return tuple(sorted(set(value)))


class RenderSettings(BaseSettings):
    """Renditions on demand, ``GET /v1/files/{id}/render`` (``SLUICE_RENDER_*``,
    docs/files-api.md § Renditions on demand). Decoder limits and qualities are the
    thumbnails' (``SLUICE_THUMBNAIL_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_RENDER_", frozen=True)

    sizes: tuple[int, ...] = Field(
        (64, 128, 256, 512, 1024, 2048),
        min_length=1,
        description="The widths and heights a rendition may ask for, pixels (an allow-list: "
        "any other is 400, so the cache cannot be flooded with sizes).",
    )
    processes: int = Field(
        1,
        ge=0,
        le=64,
        description="Render processes of each gateway process; 0: render in threads of the "
        "gateway (a decoder crash then kills it).",
    )
    max_concurrent: int = Field(
        2,
        ge=1,
        le=64,
        description="Renditions rendered at once per gateway process; past it 429 "
        "too_many_renders with Retry-After.",
    )
    max_concurrent_per_owner: int = Field(
        1,
        ge=1,
        le=64,
        description="Renditions one owner may have being rendered at once per gateway "
        "process; past it 429 too_many_renders. Cache hits are not counted.",
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Longest a render process may spend on one rendition, seconds; past it "
        "the process is killed and the request answered 422 undecodable_image.",
    )
    max_age_s: int = Field(
        86400,
        ge=0,
        le=31_536_000,
        description="Cache-Control max-age of a rendition, seconds (private: browsers only).",
    )

    @field_validator("sizes")
    @classmethod
    def _bounded(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(size < 1 or size > 8192 for size in value):
            raise ValueError("each size must be between 1 and 8192 pixels")
        return tuple(sorted(set(value)))


class FallbackSettings(BaseSettings):
    """The fallback worker (``SLUICE_FALLBACK_*``): Base64 in PostgreSQL while S3 is down."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_FALLBACK_", frozen=True)

    max_bytes: int = Field(
        10 * 1024 * 1024,
        ge=0,
        le=1024**3,
        description="Largest original kept in PostgreSQL, bytes; bigger ones wait in the store "
        "dead-letter queue for a replay.",
    )
    probe_interval_s: float = Field(
        10.0, gt=0, le=3600, description="How often S3 is probed while fallback rows wait."
    )
    batch_size: int = Field(
        20, ge=1, le=1000, description="Fallback rows migrated per batch (one row in memory)."
    )
    encryption_keys: SecretStr | None = Field(
        None,
        description="AES-256-GCM keys of the fallback's rows: a JSON object, key id → Base64 of "
        '32 random bytes (`{"k2026": "…"}`, `openssl rand -base64 32`); keep old keys while rows '
        "name them. Every process that reads the fallback (the fallback worker, the gateway) "
        "needs them.",
    )
    encryption_key_id: str = Field(
        "",
        max_length=64,
        description="The key new fallback rows are sealed with (empty: plain Base64, as before).",
    )


class StorageSettings(BaseSettings):
    """Which object store holds originals and thumbnails (``SLUICE_STORAGE_*``; seeds 001 and
    003: one storage abstraction, a local-filesystem and an S3 implementation chosen by
    ``STORAGE_BACKEND``). docs/storage.md."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_STORAGE_", frozen=True)

    backend: Literal["s3", "local"] = Field(
        "s3",
        description="Where originals and thumbnails are stored: s3 (the bucket S3_BUCKET_NAME on "
        "S3_ENDPOINT) or local (the directory SLUICE_STORAGE_LOCAL_DIR, one host or a shared "
        "volume; docs/storage.md).",
    )
    local_dir: Path = Field(
        Path(".sluice/objects"),
        description="Root directory of the local backend; it must exist (an unmounted volume is "
        "an outage, not an empty store). Objects live in <dir>/<S3_BUCKET_NAME>/<key>.",
    )
    signing_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of the URLs the gateway signs (at least 32 characters): a "
        "video's HLS playlist URLs with either backend, and the local backend's download URLs. "
        "Unset: with s3, a key derived from S3_SECRET_KEY (the same on every gateway); with "
        "the local backend, a key file made once (mode 0600) in SLUICE_STORAGE_LOCAL_DIR, "
        "shared by the processes that share that directory (the gateway does not start if it "
        "can be neither read nor made). When set, it must be the same on every gateway.",
    )

    @field_validator("local_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("signing_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value


class WorkerSettings(BaseSettings):
    """Stage worker processes (``SLUICE_WORKER_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_WORKER_", frozen=True)

    health_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /healthz and /readyz on 127.0.0.1 at this port; unset: no server.",
    )
    health_host: str = Field("127.0.0.1", description="Listen address of the health server.")
    nice: int = Field(
        0,
        ge=0,
        le=19,
        description="Added to the CPU niceness of `sluice worker` processes (and their render "
        "processes) at start: on a host shared with the gateway, 10 lets the gateway answer "
        "uploads first under load (docs/deployment.md). 0: unchanged.",
    )


class StatusSettings(BaseSettings):
    """Where ``sluice status`` (and the ops page) read the pipeline's numbers
    (``SLUICE_STATUS_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_STATUS_", frozen=True)

    management_url: str = Field(
        "http://127.0.0.1:15672",
        pattern=r"^https?://",
        description="RabbitMQ management HTTP API (queue depths, rates); credentials come from "
        "SLUICE_AMQP_URL.",
    )
    worker_urls: tuple[str, ...] = Field(
        (),
        description="Base URLs of the workers' health servers, whose /stats give handling "
        "times (JSON list); empty: http://127.0.0.1:$SLUICE_WORKER_HEALTH_PORT if that is set.",
    )
    timeout_s: float = Field(
        5.0, gt=0, le=120, description="Longest wait for each management or worker answer."
    )
    stuck_after_s: float = Field(
        900.0,
        ge=1,
        le=30 * 86400,
        description="A file not final this many seconds after it was received is stuck "
        "(`sluice doctor`'s default, the sluice_files_stuck gauge).",
    )

    @field_validator("worker_urls")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [url for url in value if not url.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"not http(s) URLs: {', '.join(bad)}")
        return tuple(url.rstrip("/") for url in value)


class StreamSettings(BaseSettings):
    """The gateway's Server-Sent Events of a file's progress, ``GET /v1/files/{id}/events``
    (``SLUICE_STREAM_*``, docs/uploads-progress.md)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_STREAM_", frozen=True)

    max_per_owner: int = Field(
        16,
        ge=1,
        le=10_000,
        description="Event streams one owner may have open on this process; past it 429 "
        "too_many_streams.",
    )
    max_total: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Event streams open on this process, all owners together; past it 503 "
        "too_many_streams. Keep it under SLUICE_GATEWAY_LIMIT_CONCURRENCY.",
    )
    keepalive_s: float = Field(
        15.0,
        gt=0,
        le=300,
        description="Seconds of silence after which a stream sends a keep-alive comment; also "
        "how often the LISTEN connection is checked.",
    )
    first_event_wait_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="How long a stream of a file not recorded yet (just accepted) waits for "
        "its first event before answering 404; every 404 of the route takes this long.",
    )


class FilesSettings(BaseSettings):
    """The files API's edits (``SLUICE_FILES_*``, docs/files-api.md)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_FILES_", frozen=True)

    edit_wait_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="How long PATCH /v1/files/{id} waits for the commit stage to apply the "
        "edit before answering 202 with the event's id instead of the new state, seconds.",
    )


class LogSettings(BaseSettings):
    """Log output (``SLUICE_LOG_*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_LOG_", frozen=True)

    format: str = Field(
        "auto", pattern=r"^(auto|json|console)$", description="json, console, or auto (tty)."
    )
    level: str = Field(
        "info", pattern=r"^(debug|info|warning|error)$", description="Lowest level written."
    )


class TracingSettings(BaseSettings):
    """OpenTelemetry tracing, from the standard ``OTEL_*`` variables (OpenTelemetry SDK
    environment variables specification); see docs/observability.md."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", frozen=True)

    service_name: str | None = Field(
        None, description="service.name of the spans; unset: sluice, sluice-<worker>, ..."
    )
    traces_exporter: str | None = Field(
        None,
        pattern=r"^(otlp|console|none)$",
        description="otlp, console or none; unset: otlp if an OTLP endpoint is set, else none.",
    )
    exporter_otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP collector base URL, e.g. http://collector:4318."
    )
    exporter_otlp_traces_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces URL (overrides the base URL for traces)."
    )


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S]) -> S:
    """Build ``cls`` from the environment.

    Raises:
        ConfigError: a variable is malformed or out of bounds; the message names it, e.g.
            ``SLUICE_AMQP_PREFETCH_COUNT: Input should be greater than or equal to 1 (got '0')``.
    """
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"][:1])
            variable = f"{prefix}{field}".upper()
            shown = "a value (not shown)" if "secret" in field else repr(error.get("input"))
            problems.append(f"{variable}: {error['msg']} (got {shown})")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


class Settings:
    """Every settings group, built once at start (:meth:`from_env`) and passed down.

    Raises:
        ConfigError: the quarantine bucket (``SLUICE_SPOOL_S3_BUCKET``) is the final bucket or
            an upstream bucket; or the S3 spool (``SLUICE_SPOOL_BACKEND=s3``) with the local
            storage backend (``SLUICE_STORAGE_BACKEND=local``).
    """

    def __init__(
        self,
        *,
        amqp: AmqpSettings,
        s3: S3Settings,
        database: DatabaseSettings,
        spool: SpoolSettings,
        clamd: ClamdSettings,
        gateway: GatewaySettings,
        thumbnail: ThumbnailSettings,
        log: LogSettings,
        worker: WorkerSettings | None = None,
        fallback: FallbackSettings | None = None,
        tracing: TracingSettings | None = None,
        status: StatusSettings | None = None,
        breaker: BreakerSettings | None = None,
        tus: TusSettings | None = None,
        storage: StorageSettings | None = None,
        stream: StreamSettings | None = None,
        files: FilesSettings | None = None,
        mirror: MirrorSettings | None = None,
        render: RenderSettings | None = None,
        pdftext: PdfTextSettings | None = None,
        ocr: OcrSettings | None = None,
        text: TextSettings | None = None,
        video: VideoSettings | None = None,
    ) -> None:
        storage = storage or StorageSettings()
        if storage.backend == "local" and spool.backend == "s3":
            raise ConfigError(
                "invalid settings: SLUICE_SPOOL_BACKEND=s3 needs SLUICE_STORAGE_BACKEND=s3: the "
                "quarantine bucket promotes files by a server-side S3 copy, which the local "
                "storage backend (SLUICE_STORAGE_BACKEND=local) cannot receive"
            )
        if spool.s3_bucket == s3.bucket_name or spool.s3_bucket in s3.upstream_buckets:
            raise ConfigError(
                f"invalid settings: SLUICE_SPOOL_S3_BUCKET: the quarantine bucket "
                f"{spool.s3_bucket!r} must be neither S3_BUCKET_NAME nor one of "
                "S3_UPSTREAM_BUCKETS (unscanned files would be read or served as stored ones)"
            )
        if mirror is not None and mirror.enabled:
            if (mirror.endpoint, mirror.bucket) == (s3.endpoint, s3.bucket_name):
                raise ConfigError(
                    "invalid settings: SLUICE_MIRROR_BUCKET on SLUICE_MIRROR_ENDPOINT is the "
                    "main bucket (S3_BUCKET_NAME on S3_ENDPOINT): a mirror must be another store"
                )
        self.amqp = amqp
        self.s3 = s3
        self.database = database
        self.spool = spool
        self.clamd = clamd
        self.gateway = gateway
        self.thumbnail = thumbnail
        self.log = log
        self.worker = worker or WorkerSettings()
        self.fallback = fallback or FallbackSettings()
        self.tracing = tracing or TracingSettings()
        self.status = status or StatusSettings()
        self.breaker = breaker or BreakerSettings()
        self.tus = tus or TusSettings()
        self.storage = storage
        self.stream = stream or StreamSettings()
        self.files = files or FilesSettings()
        self.mirror = mirror or MirrorSettings()
        self.render = render or RenderSettings()
        self.pdftext = pdftext or PdfTextSettings()
        self.ocr = ocr or OcrSettings()
        self.text = text or TextSettings()
        self.video = video or VideoSettings()

    @classmethod
    def from_env(cls) -> Settings:
        """Read every group from the environment.

        Raises:
            ConfigError: a variable is malformed or out of bounds (named in the message).
        """
        return cls(
            amqp=load(AmqpSettings),
            s3=load(S3Settings),
            database=load(DatabaseSettings),
            spool=load(SpoolSettings),
            clamd=load(ClamdSettings),
            gateway=load(GatewaySettings),
            thumbnail=load(ThumbnailSettings),
            log=load(LogSettings),
            worker=load(WorkerSettings),
            fallback=load(FallbackSettings),
            tracing=load(TracingSettings),
            status=load(StatusSettings),
            breaker=load(BreakerSettings),
            tus=load(TusSettings),
            storage=load(StorageSettings),
            stream=load(StreamSettings),
            files=load(FilesSettings),
            mirror=load(MirrorSettings),
            render=load(RenderSettings),
            pdftext=load(PdfTextSettings),
            ocr=load(OcrSettings),
            text=load(TextSettings),
            video=load(VideoSettings),
        )


SETTINGS_GROUPS: tuple[type[BaseSettings], ...] = (
    AmqpSettings,
    BreakerSettings,
    S3Settings,
    DatabaseSettings,
    SpoolSettings,
    ClamdSettings,
    GatewaySettings,
    TusSettings,
    ThumbnailSettings,
    RenderSettings,
    FallbackSettings,
    StorageSettings,
    WorkerSettings,
    StatusSettings,
    StreamSettings,
    LogSettings,
    TracingSettings,
    FilesSettings,
    MirrorSettings,
    PdfTextSettings,
    OcrSettings,
    TextSettings,
    VideoSettings,
)


def environment_reference() -> str:
    """A Markdown table of every environment variable: name, default, description."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for group in SETTINGS_GROUPS:
        prefix = str(group.model_config.get("env_prefix", ""))
        for name, field in group.model_fields.items():
            default = field.default
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            if isinstance(default, Path):
                shown = str(default)
            lines.append(f"| `{(prefix + name).upper()}` | `{shown}` | {field.description} |")
    return "\n".join(lines) + "\n"
