"""The one place the object-storage backend is chosen (``SLUICE_STORAGE_BACKEND``; seeds 001 and
003: one storage abstraction, the backend picked by ``STORAGE_BACKEND``).

Every process opens its object store with :func:`open_object_storage`, so the stages, the
gateway and the ops commands always agree on where objects are. docs/storage.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from shared.adapters.local_storage import LocalObjectStorage
from shared.adapters.signed_urls import UrlSigner, derived_secret, secret_from_key_file
from shared.adapters.storage import S3ObjectStorage
from shared.errors import ConfigError, StorageUnavailable
from shared.ports import ObjectStore
from shared.settings import Settings, StorageSettings


def signer_for(storage: StorageSettings) -> UrlSigner:
    """The signer of the local backend's download URLs: ``SLUICE_STORAGE_SIGNING_SECRET``, or
    the key file in ``SLUICE_STORAGE_LOCAL_DIR`` (made on first use).

    Raises:
        StorageUnavailable: no secret is set and the key file cannot be read or made.
    """
    if storage.signing_secret is not None:
        return UrlSigner(storage.signing_secret.get_secret_value().encode())
    return UrlSigner(secret_from_key_file(storage.local_dir))


def url_signer(settings: Settings) -> UrlSigner:
    """The signer of every URL the gateway serves on a signature instead of an API key (a
    video's HLS playlists; with the local backend also ``/v1/objects/…``), with either storage
    backend: ``SLUICE_STORAGE_SIGNING_SECRET`` when set; unset, the local backend's key file
    (:func:`signer_for`: the processes sharing the directory share it), or with S3 a key
    derived from ``S3_SECRET_KEY`` (:func:`~shared.adapters.signed_urls.derived_secret`), which
    every gateway of the deployment holds already: gateways on many hosts agree with nothing
    on disk, as S3 verifies its own presigned URLs with that same secret.

    Raises:
        ConfigError: no secret is set and the local backend's key file cannot be read or made
            (naming both variables), so the gateway never hands out URLs it could not verify.
    """
    if settings.storage.signing_secret is not None or settings.storage.backend == "local":
        try:
            return signer_for(settings.storage)
        except StorageUnavailable as exc:
            raise ConfigError(
                "SLUICE_STORAGE_SIGNING_SECRET is unset and the key file in "
                f"SLUICE_STORAGE_LOCAL_DIR cannot be read or made: {exc}"
            ) from exc
    return UrlSigner(derived_secret(settings.s3.secret_key))


@contextlib.asynccontextmanager
async def open_object_storage(
    settings: Settings, *, stored_bytes_stage: str | None = None
) -> AsyncIterator[ObjectStore]:
    """The object store of ``settings``: :class:`S3ObjectStorage` on the bucket of ``S3_*``, or
    :class:`LocalObjectStorage` on ``SLUICE_STORAGE_LOCAL_DIR`` (bucket directory
    ``S3_BUCKET_NAME``), open for the block. ``stored_bytes_stage`` counts the originals it
    writes in ``sluice_stored_bytes_total{stage}``.

    Nothing is contacted: S3 or the directory is reached on first use, so a stage starts while
    its storage is down and its circuit breaker waits for it. The local backend's signing key is
    read (or made) here.

    Raises:
        StorageUnavailable: local backend, no ``SLUICE_STORAGE_SIGNING_SECRET`` and the key file
            cannot be read or made (the root missing or read-only).
    """
    if settings.storage.backend == "local":
        local = LocalObjectStorage(
            settings.storage.local_dir,
            settings.s3.bucket_name,
            signer=signer_for(settings.storage),
            presign_ttl_s=settings.s3.presign_ttl_s,
            chunk_bytes=settings.spool.chunk_bytes,
            stored_bytes_stage=stored_bytes_stage,
        )
        async with local:
            yield local
        return
    async with S3ObjectStorage(settings.s3, stored_bytes_stage=stored_bytes_stage) as s3:
        yield s3
