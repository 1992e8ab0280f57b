"""The fallback rows' AES-256-GCM (``shared/adapters/row_cipher.py``): settings refused with a
message that names the variable and never a key; sealed text bound to its row."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid

import pytest

from shared.adapters.row_cipher import RowCipher
from shared.errors import ChecksumMismatch, ConfigError
from shared.settings import FallbackSettings

KEY = base64.b64encode(os.urandom(32)).decode()
ROW = {"file_id": uuid.uuid4(), "version_number": 1, "sha256": hashlib.sha256(b"x").hexdigest()}


def cipher(keys: object, current: str = "") -> RowCipher:
    return RowCipher.from_settings(
        FallbackSettings(encryption_keys=json.dumps(keys), encryption_key_id=current)
    )


@pytest.mark.parametrize(
    ("keys", "current", "message"),
    [
        (["not", "an", "object"], "", "SLUICE_FALLBACK_ENCRYPTION_KEYS: not a JSON object"),
        ({"k1": base64.b64encode(b"short").decode()}, "k1", "is not 32 bytes"),
        ({"k1": "***"}, "k1", "a key is not Base64"),
        ({"bad id!": KEY}, "", "is not 1-64"),
        ({"k1": KEY}, "k2", "SLUICE_FALLBACK_ENCRYPTION_KEY_ID: 'k2' is not a key"),
    ],
)
def test_bad_settings_are_refused_without_showing_a_key(
    keys: object, current: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        cipher(keys, current)
    assert KEY not in str(caught.value)


def test_sealed_text_opens_only_as_its_own_row_and_plain_text_still_opens() -> None:
    sealing = cipher({"k1": KEY}, "k1")
    text = sealing.seal(b"hello", **ROW)
    assert text.startswith("aesgcm:k1:") and "aGVsbG8" not in text
    assert sealing.open(text, **ROW) == b"hello"
    assert sealing.seal(b"hello", **ROW) != text  # a fresh nonce
    with pytest.raises(ChecksumMismatch):
        sealing.open(text, **{**ROW, "version_number": 2})
    assert sealing.open(base64.b64encode(b"old row").decode(), **ROW) == b"old row"
    with pytest.raises(ConfigError, match="sealed with key 'k1'"):
        RowCipher.plain().open(text, **ROW)
    assert RowCipher.plain().seal(b"hello", **ROW) == "aGVsbG8="
