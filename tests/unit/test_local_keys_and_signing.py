"""The local storage backend's pure parts: which keys may name a file below the root, and the
signed download URLs (HMAC-SHA256 over key, expiry, name and type); the settings that choose it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.adapters.local_keys import is_safe_key, key_parts
from shared.adapters.signed_urls import UrlSigner
from shared.errors import ConfigError, InvalidSource
from shared.settings import Settings, StorageSettings, load

SIGNER = UrlSigner(b"k" * 32)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../outside", "'..'"),
        ("alice/../../outside", "'..'"),
        ("alice/./x", "'.'"),
        ("alice//x", "empty"),
        ("alice/", "empty"),
        ("alice\\..\\x", "backslash"),
        ("alice/evil\x00.jpg", "NUL"),
        ("alice/\x1b[31m", "control"),
        ("alice/.sluice-meta.x.json", "reserved"),
        ("a" * 231, "segment longer"),
        ("a/" * 600, "longer than 1024"),
    ],
)
def test_keys_that_could_leave_the_root_are_refused_with_the_reason(key: str, problem: str) -> None:
    with pytest.raises(InvalidSource, match="object key not allowed") as caught:
        key_parts(key)
    assert problem in str(caught.value)


def test_the_keys_the_pipeline_writes_are_accepted() -> None:
    key = "alice/3f6c-20261121T100945Z-photo_été.jpg"
    assert key_parts(key) == ("alice", "3f6c-20261121T100945Z-photo_été.jpg")
    assert key_parts(f"{key}.thumb-256.webp")[-1].endswith(".thumb-256.webp")
    assert key_parts(".hidden/..x/x..") == (".hidden", "..x", "x..")


@given(st.text(min_size=1, max_size=80))
def test_an_accepted_key_never_has_a_segment_that_moves_up_or_out(key: str) -> None:
    if not is_safe_key(key):
        return
    parts = key_parts(key)
    assert parts[0] != "" and all(p not in ("", ".", "..") for p in parts)
    assert not any("\x00" in p or "\\" in p for p in parts)


def test_a_signed_url_checks_out_until_it_expires() -> None:
    url = SIGNER.url("alice/x.jpg", 60, now=1_000_000)
    parts = urlsplit(url)
    assert parts.path == "/v1/objects/alice/x.jpg"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["expires"] == "1000060"
    args = ("alice/x.jpg", 1_000_060, query["signature"])
    assert SIGNER.problem(*args, now=1_000_059) is None
    assert SIGNER.problem(*args, now=1_000_060) == "URL expired at 1000060 (Unix seconds)"


@pytest.mark.parametrize(
    "change",
    ["key", "expires", "signature", "name", "type", "secret"],
)
def test_changing_any_signed_field_makes_the_url_forged(change: str) -> None:
    fields = {"download_name": "x.jpg", "content_type": "image/jpeg"}
    signature = SIGNER.signature("alice/x.jpg", 2_000, **fields)
    key, expires, signer = "alice/x.jpg", 2_000, SIGNER
    if change == "key":
        key = "bob/x.jpg"
    elif change == "expires":
        expires = 9_999_999
    elif change == "signature":
        signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    elif change == "name":
        fields["download_name"] = "x.html"
    elif change == "type":
        fields["content_type"] = "text/html"
    else:
        signer = UrlSigner(b"other-secret-of-at-least-32-bytes")
    assert signer.problem(key, expires, signature, now=1_000, **fields) == (
        "signature does not match"
    )


def test_an_expired_forgery_is_called_forged() -> None:
    assert SIGNER.problem("a/b", 10, "00" * 32, now=20) == "signature does not match"


def test_local_storage_with_the_s3_spool_stops_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_STORAGE_BACKEND", "local")
    monkeypatch.setenv("SLUICE_SPOOL_BACKEND", "s3")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env()
    assert "SLUICE_SPOOL_BACKEND=s3" in str(caught.value)
    assert "SLUICE_STORAGE_BACKEND=local" in str(caught.value)


def test_storage_settings_default_to_s3_and_bound_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings.from_env()
    assert settings.storage.backend == "s3"
    assert settings.storage.local_dir.is_absolute()
    assert settings.storage.local_dir.name == "objects"
    monkeypatch.setenv("SLUICE_STORAGE_SIGNING_SECRET", "short")
    with pytest.raises(ConfigError, match="SLUICE_STORAGE_SIGNING_SECRET: Value error"):
        load(StorageSettings)
    monkeypatch.setenv("SLUICE_STORAGE_BACKEND", "ftp")
    with pytest.raises(ConfigError, match="SLUICE_STORAGE_BACKEND"):
        load(StorageSettings)


def test_a_refused_secret_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_STORAGE_SIGNING_SECRET", "hunter2")
    with pytest.raises(ConfigError) as caught:
        load(StorageSettings)
    assert "hunter2" not in str(caught.value)
