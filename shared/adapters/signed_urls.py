"""Signed URLs served by the gateway: the local storage backend's downloads and a video's HLS
playlists.

S3 answers its own presigned URLs; a directory cannot, so with ``SLUICE_STORAGE_BACKEND=local``
the gateway serves ``GET /v1/objects/{key}?expires=…&signature=…`` (``services.gateway.objects``)
and this module signs and checks those URLs. The signature is HMAC-SHA256 (RFC 2104) over::

    GET \\n <key> \\n <expires, Unix seconds> \\n <download name> \\n <content type>

(the last two empty when not asked for), lowercase hex. Like S3's ``response-content-
disposition`` and ``response-content-type``, the name and type are covered by the signature, so
a holder of the URL cannot change how the object is served. Checked in constant time
(:func:`hmac.compare_digest`).

A gateway route that takes a signature instead of an API key (``GET /v1/files/{id}/hls/{name}``,
with either storage backend) signs a *resource*, a string naming exactly what the URL opens (the
route's path), the same way over::

    RESOURCE \\n <resource> \\n <expires, Unix seconds>

Its first line differs from a download's, so neither signature ever verifies as the other.

The key: ``SLUICE_STORAGE_SIGNING_SECRET`` when set; otherwise, with the local backend, a random
256-bit key kept in ``<SLUICE_STORAGE_LOCAL_DIR>/.sluice-signing-key`` (mode 0600,
:func:`secret_from_key_file`), made by the first process that needs it and read by every other
sharing the directory; with S3, a key derived from ``S3_SECRET_KEY`` (:func:`derived_secret`),
which every gateway holds, so gateways on many hosts agree with nothing on disk
(``shared.adapters.object_storage.url_signer``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from shared.errors import StorageUnavailable

#: The key file's name in the storage root (the backend's reserved prefix: never an object key).
KEY_FILE = ".sluice-signing-key"
#: What a key derived from the S3 secret is for (:func:`derived_secret`): a key for one purpose
#: only, never the S3 secret itself.
DERIVED_KEY_LABEL = b"sluice gateway URL signing key v1"
#: The gateway route's path prefix.
ROUTE_PREFIX = "/v1/objects/"


def _message(key: str, expires: int, download_name: str | None, content_type: str | None) -> bytes:
    return "\n".join(("GET", key, str(expires), download_name or "", content_type or "")).encode()


def _resource_message(resource: str, expires: int) -> bytes:
    return "\n".join(("RESOURCE", resource, str(expires))).encode()


def _refusal(expected: str, signature: str, expires: int, now: float | None) -> str | None:
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "signature does not match"
    if (now if now is not None else time.time()) >= expires:
        return f"URL expired at {expires} (Unix seconds)"
    return None


@dataclass(frozen=True)
class UrlSigner:
    """Signs and checks download URLs with ``secret`` (bytes, at least 32)."""

    secret: bytes = field(repr=False)

    def signature(
        self,
        key: str,
        expires: int,
        *,
        download_name: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """HMAC-SHA256 of the URL's fields (module docstring), lowercase hex."""
        digest = hmac.new(
            self.secret, _message(key, expires, download_name, content_type), "sha256"
        )
        return digest.hexdigest()

    def url(
        self,
        key: str,
        ttl_s: int,
        *,
        download_name: str | None = None,
        content_type: str | None = None,
        now: float | None = None,
    ) -> str:
        """A path and query, relative to the gateway, that serves ``key`` for ``ttl_s`` seconds
        from ``now`` (Unix seconds; default the clock), e.g.
        ``/v1/objects/alice/x.jpg?expires=1767225600&signature=3f…``."""
        expires = int(now if now is not None else time.time()) + ttl_s
        query = {"expires": str(expires)}
        if download_name is not None:
            query["name"] = download_name
        if content_type is not None:
            query["type"] = content_type
        query["signature"] = self.signature(
            key, expires, download_name=download_name, content_type=content_type
        )
        return f"{ROUTE_PREFIX}{quote(key, safe='/')}?{urlencode(query)}"

    def problem(
        self,
        key: str,
        expires: int,
        signature: str,
        *,
        download_name: str | None = None,
        content_type: str | None = None,
        now: float | None = None,
    ) -> str | None:
        """Why the URL must be refused, or ``None`` if it is good: ``"signature does not match"``
        (forged, or any field changed) or ``"URL expired at <expires>"`` (Unix seconds). The
        signature is checked first, in constant time, so an expired forgery is called forged."""
        expected = self.signature(
            key, expires, download_name=download_name, content_type=content_type
        )
        return _refusal(expected, signature, expires, now)

    def resource_signature(self, resource: str, expires: int) -> str:
        """HMAC-SHA256 of ``resource`` (e.g. ``/v1/files/3f…/hls/master.m3u8``) and ``expires``
        (Unix seconds; module docstring), lowercase hex."""
        return hmac.new(self.secret, _resource_message(resource, expires), "sha256").hexdigest()

    def resource_query(self, resource: str, ttl_s: int, *, now: float | None = None) -> str:
        """The query string that opens ``resource`` for ``ttl_s`` seconds from ``now`` (Unix
        seconds; default the clock), e.g. ``expires=1767225600&signature=3f…``."""
        expires = int(now if now is not None else time.time()) + ttl_s
        signature = self.resource_signature(resource, expires)
        return urlencode({"expires": str(expires), "signature": signature})

    def resource_problem(
        self, resource: str, expires: int, signature: str, *, now: float | None = None
    ) -> str | None:
        """Why a URL signed for ``resource`` must be refused, or ``None`` if it is good; the
        reasons and their order are :meth:`problem`'s. A signature made for another resource
        (another file, another name) or for a download does not match."""
        return _refusal(self.resource_signature(resource, expires), signature, expires, now)


def derived_secret(s3_secret_key: str) -> bytes:
    """A 256-bit signing key derived from ``s3_secret_key``: HMAC-SHA256 keyed by the S3 secret
    over :data:`DERIVED_KEY_LABEL` (the HKDF-Expand step of RFC 5869 for one block, the secret
    itself being a random key). Every gateway talking to the same S3 with the same credentials
    derives the same key; the URLs it signs say nothing of the S3 secret; changing the S3
    secret invalidates them, as it does S3's own presigned URLs."""
    return hmac.new(s3_secret_key.encode(), DERIVED_KEY_LABEL + b"\x01", "sha256").digest()


def secret_from_key_file(root: Path) -> bytes:
    """The signing key kept in ``root/.sluice-signing-key``, made (mode 0600, 64 hex digits)
    if it is not there yet. Made in a temporary file, then hard-linked into place, so a process
    never reads a half-written key and two processes starting together end with the same one.

    Raises:
        StorageUnavailable: ``root`` is missing or not writable, or the file cannot be read.
    """
    path = root / KEY_FILE
    try:
        if not path.exists():
            temporary = root / f".sluice-tmp-{secrets.token_hex(8)}"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                temporary.unlink()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            secret = handle.read().strip()
    except OSError as exc:
        raise StorageUnavailable(
            f"cannot read or make the signing key file: {exc!r}", path=str(path)
        ) from exc
    if len(secret) < 32:
        raise StorageUnavailable("signing key file shorter than 32 bytes", path=str(path))
    return secret


def sha256_of_secret(secret: bytes) -> str:
    """A short fingerprint of ``secret`` for logs (first 12 hex digits of its SHA-256), so two
    hosts can be compared without printing the key."""
    return hashlib.sha256(secret).hexdigest()[:12]
