"""Signed playlist URLs (docs/transforms.md § Video): the signature binds the file id, the
playlist's name and the expiry; the master playlist served names its media playlists by signed
URLs; and the gateway's signing key comes from the secret or a key file, with either storage
backend, or the gateway does not start."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from services.gateway.videos import hls_url, signed_hls_url, signed_master
from shared.adapters.object_storage import url_signer
from shared.adapters.signed_urls import UrlSigner
from shared.errors import ConfigError
from shared.hls import listed_names
from shared.settings import Settings

SIGNER = UrlSigner(b"k" * 32)
FILE = uuid.UUID("0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a02")
OTHER = uuid.UUID("7c1d2e3f-0000-4000-8000-000000000001")
NOW = 1_767_225_600
MASTER = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-STREAM-INF:BANDWIDTH=1020800,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"
360p.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=3220800,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"
720p.m3u8
"""


def split(url: str) -> tuple[str, int, str]:
    """``(path, expires, signature)`` of a signed playlist URL."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query, strict_parsing=True).items()}
    assert set(query) == {"expires", "signature"}, query
    return parts.path, int(query["expires"]), query["signature"]


def test_a_signed_url_opens_its_own_playlist_until_it_expires() -> None:
    path, expires, signature = split(signed_hls_url(SIGNER, FILE, "master.m3u8", 900, now=NOW))
    assert path == f"/v1/files/{FILE}/hls/master.m3u8" == hls_url(FILE)
    assert expires == NOW + 900
    assert SIGNER.resource_problem(path, expires, signature, now=NOW + 899) is None
    assert SIGNER.resource_problem(path, expires, signature, now=NOW + 900) == (
        f"URL expired at {NOW + 900} (Unix seconds)"
    )


@pytest.mark.parametrize(
    "change", ["other file", "other name", "later expiry", "tampered", "other secret"]
)
def test_a_signature_opens_nothing_else(change: str) -> None:
    path, expires, signature = split(signed_hls_url(SIGNER, FILE, "360p.m3u8", 900, now=NOW))
    signer = SIGNER
    if change == "other file":
        path = hls_url(OTHER, "360p.m3u8")
    elif change == "other name":
        path = hls_url(FILE, "720p.m3u8")
    elif change == "later expiry":
        expires += 86_400
    elif change == "tampered":
        signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    else:
        signer = UrlSigner(b"another-secret-of-at-least-32-bytes")
    assert signer.resource_problem(path, expires, signature, now=NOW) == "signature does not match"


def test_a_download_signature_is_no_playlist_signature_nor_the_reverse() -> None:
    path = hls_url(FILE)
    download = SIGNER.signature(path, NOW + 900)
    assert SIGNER.resource_problem(path, NOW + 900, download, now=NOW) == (
        "signature does not match"
    )
    resource = SIGNER.resource_signature(path, NOW + 900)
    assert SIGNER.problem(path, NOW + 900, resource, now=NOW) == "signature does not match"


def test_the_master_names_its_media_playlists_by_signed_urls() -> None:
    served = signed_master(MASTER, SIGNER, FILE, 900, now=NOW)
    urls = listed_names(served)
    assert [urlsplit(u).path for u in urls] == [
        f"/v1/files/{FILE}/hls/360p.m3u8",
        f"/v1/files/{FILE}/hls/720p.m3u8",
    ]
    for url in urls:
        path, expires, signature = split(url)
        assert expires == NOW + 900
        assert SIGNER.resource_problem(path, expires, signature, now=NOW) is None
    assert served.count("#EXT-X-STREAM-INF") == 2  # the tags are kept
    with pytest.raises(ValueError, match="not a rendition's file"):
        signed_master(MASTER.replace("720p.m3u8", "https://evil/x.m3u8"), SIGNER, FILE, 900)


def test_with_s3_gateways_on_other_hosts_derive_the_same_key_from_the_s3_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two gateways with nothing on disk in common (their own spool directories) verify each
    other's URLs; another S3 secret gives another key; nothing is written to the spool."""
    monkeypatch.delenv("SLUICE_STORAGE_SIGNING_SECRET", raising=False)
    monkeypatch.setenv("SLUICE_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("S3_SECRET_KEY", "the-deployment-s3-secret")
    signers = []
    for host in ("one", "two"):
        monkeypatch.setenv("SLUICE_SPOOL_DIR", str(tmp_path / host / "spool"))
        signers.append(url_signer(Settings.from_env()))
    query = signers[0].resource_query("/v1/files/x/hls/master.m3u8", 60)
    fields = {name: values[0] for name, values in parse_qs(query).items()}
    problem = signers[1].resource_problem(
        "/v1/files/x/hls/master.m3u8", int(fields["expires"]), fields["signature"]
    )
    assert problem is None
    assert signers[0].secret != b"the-deployment-s3-secret"  # a key of its own purpose
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    monkeypatch.setenv("S3_SECRET_KEY", "another-s3-secret")
    assert url_signer(Settings.from_env()) != signers[0]
    monkeypatch.setenv("SLUICE_STORAGE_SIGNING_SECRET", "s" * 40)
    assert url_signer(Settings.from_env()) == UrlSigner(b"s" * 40)


def test_with_no_secret_and_no_key_file_the_gateway_does_not_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "objects"
    not_a_directory.write_bytes(b"")  # a mount point gone wrong: no key file can be made
    monkeypatch.delenv("SLUICE_STORAGE_SIGNING_SECRET", raising=False)
    monkeypatch.setenv("SLUICE_STORAGE_BACKEND", "local")
    monkeypatch.setenv("SLUICE_STORAGE_LOCAL_DIR", str(not_a_directory))
    with pytest.raises(ConfigError) as caught:
        url_signer(Settings.from_env())
    assert "SLUICE_STORAGE_SIGNING_SECRET" in str(caught.value)
    assert "SLUICE_STORAGE_LOCAL_DIR" in str(caught.value)
