"""AES-256-GCM of the fallback's rows (seed 000: AES-256 at rest; docs/security.md §
Encryption at rest).

While S3 is down the fallback worker keeps originals Base64 in PostgreSQL
(``fallback_blobs.data_base64``). With ``SLUICE_FALLBACK_ENCRYPTION_KEY_ID`` set, a new row's
text is ``aesgcm:<key id>:<Base64 of nonce ‖ ciphertext ‖ tag>`` instead: a random 96-bit
nonce (NIST SP 800-38D), the 128-bit tag, and as associated data the file id, version and
SHA-256, so a row's bytes cannot be passed off as another row's. The key id travels with each
row, so keys rotate: add the new key to ``SLUICE_FALLBACK_ENCRYPTION_KEYS``, point the key id
at it, and keep the old key until no row names it. Base64 has no ``:``, so rows written before
(plain Base64) stay readable as they are.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import uuid
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ChecksumMismatch, ConfigError
from shared.settings import FallbackSettings

SCHEME = "aesgcm"
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NONCE_BYTES = 12


def _associated(file_id: uuid.UUID, version_number: int, sha256: str) -> bytes:
    return f"sluice-fallback:{file_id}:{version_number}:{sha256}".encode()


class RowCipher:
    """Seals and opens fallback rows with the keys of ``keys`` (key id → 32-byte key);
    ``current`` is the id new rows are sealed with (``None``: plain Base64, as before)."""

    def __init__(self, keys: Mapping[str, bytes], current: str | None) -> None:
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    @classmethod
    def plain(cls) -> RowCipher:
        """No keys: new rows are plain Base64; an encrypted row cannot be opened."""
        return cls({}, None)

    @classmethod
    def from_settings(cls, settings: FallbackSettings) -> RowCipher:
        """The cipher of ``SLUICE_FALLBACK_ENCRYPTION_KEYS`` (a JSON object, key id → Base64 of
        32 random bytes, e.g. ``openssl rand -base64 32``) and
        ``SLUICE_FALLBACK_ENCRYPTION_KEY_ID``.

        Raises:
            ConfigError: the keys are not such an object, or the key id is not among them
                (the message names the variable, never a key).
        """
        keys: dict[str, bytes] = {}
        if settings.encryption_keys is not None:
            try:
                listed = json.loads(settings.encryption_keys.get_secret_value())
                if not isinstance(listed, dict):
                    raise ValueError("not a JSON object")
                for key_id, text in listed.items():
                    if not KEY_ID.fullmatch(key_id):
                        raise ValueError(f"key id {key_id!r} is not 1-64 of [A-Za-z0-9._-]")
                    key = base64.b64decode(text, validate=True)
                    if len(key) != 32:
                        raise ValueError(f"key {key_id!r} is not 32 bytes (AES-256)")
                    keys[key_id] = key
            except (ValueError, TypeError, binascii.Error) as exc:
                # Our own messages and JSON's (a position) never hold key material; others may.
                safe = type(exc) is ValueError or isinstance(exc, json.JSONDecodeError)
                reason = str(exc) if safe else f"a key is not Base64 ({type(exc).__name__})"
                raise ConfigError(
                    f"invalid settings: SLUICE_FALLBACK_ENCRYPTION_KEYS: {reason} (expected "
                    '{"<key id>": "<Base64 of 32 bytes>", ...})'
                ) from None
        current = settings.encryption_key_id or None
        if current is not None and current not in keys:
            raise ConfigError(
                f"invalid settings: SLUICE_FALLBACK_ENCRYPTION_KEY_ID: {current!r} is not a key "
                "of SLUICE_FALLBACK_ENCRYPTION_KEYS"
            )
        return cls(keys, current)

    def seal(self, data: bytes, *, file_id: uuid.UUID, version_number: int, sha256: str) -> str:
        """The row text of ``data``: sealed with the current key, or plain Base64 without one."""
        if self.current is None:
            return base64.b64encode(data).decode("ascii")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(
            nonce, data, _associated(file_id, version_number, sha256)
        )
        return f"{SCHEME}:{self.current}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def open(self, text: str, *, file_id: uuid.UUID, version_number: int, sha256: str) -> bytes:
        """The bytes of a row text, sealed or plain Base64.

        Raises:
            ConfigError: the row names a key id this process does not have.
            ChecksumMismatch: the text is not Base64, or does not open with its key (damaged,
                or another row's).
        """
        if not text.startswith(f"{SCHEME}:"):
            try:
                return base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                raise ChecksumMismatch(f"fallback row is not Base64: {exc}") from None
        _, key_id, payload = text.split(":", 2)
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise ConfigError(
                f"fallback row of {file_id} is sealed with key {key_id!r}, which "
                "SLUICE_FALLBACK_ENCRYPTION_KEYS does not hold"
            )
        try:
            raw = base64.b64decode(payload, validate=True)
            return cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated(file_id, version_number, sha256)
            )
        except (binascii.Error, InvalidTag):
            raise ChecksumMismatch(
                "fallback row does not open with its key: damaged, or another row's",
                file_id=str(file_id),
                key_id=key_id,
            ) from None
