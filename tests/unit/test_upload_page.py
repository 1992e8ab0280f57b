"""The upload page's Content-Security-Policy names exactly the origin its thumbnails come from:
the origin of the URLs the real storage adapters presign (nothing is contacted to presign); the
library it serves is the one ``web/package-lock.json`` pins."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.gateway.upload_page import content_security_policy, image_origin
from shared.adapters.local_storage import LocalObjectStorage
from shared.adapters.signed_urls import UrlSigner
from shared.adapters.storage import S3ObjectStorage
from shared.settings import S3Settings


def img_src(url: str) -> str:
    directives = dict(
        part.strip().split(" ", 1) for part in content_security_policy(image_origin(url)).split(";")
    )
    return directives["img-src"]


async def test_the_local_backend_adds_no_origin(tmp_path: Path) -> None:
    storage = LocalObjectStorage(tmp_path, "sluice", signer=UrlSigner(b"k" * 32))
    url = await storage.presigned_get_url("owner/thumb.webp", 60)
    assert url.startswith("/v1/objects/")
    assert img_src(url) == "'self'"


@pytest.mark.parametrize("path_style", [True, False])
async def test_the_s3_backend_adds_the_origin_of_its_presigned_urls(path_style: bool) -> None:
    settings = S3Settings(
        endpoint="https://s3.example.test:9000", bucket_name="sluice", force_path_style=path_style
    )
    async with S3ObjectStorage(settings) as storage:
        url = await storage.presigned_get_url("owner/thumb.webp", 60)
    # The host is the endpoint's, or the bucket's below it with virtual-hosted addressing.
    host = urlsplit(url).netloc
    assert host in ("s3.example.test:9000", "sluice.s3.example.test:9000"), url
    assert img_src(url) == f"'self' https://{host}"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("/v1/objects/a.webp?expires=1&signature=ab", None),
        ("http://user:secret@127.0.0.1:8333/b/k?X-Amz-Signature=x", "http://127.0.0.1:8333"),
        ("data:image/png;base64,AAAA", None),
        ("javascript:alert(1)", None),
    ],
)
def test_image_origin(url: str, origin: str | None) -> None:
    assert image_origin(url) == origin


ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "services/gateway/static/vendor"


def test_the_vendored_tus_js_client_is_the_locked_release() -> None:
    lock = json.loads((ROOT / "web/package-lock.json").read_text())
    version = lock["packages"]["node_modules/tus-js-client"]["version"]
    assert (VENDOR / "VERSION").read_text().strip() == f"tus-js-client {version}", (
        "run scripts/vendor-web.sh"
    )
    assert "MIT License" in (VENDOR / "tus-js-client.LICENSE").read_text()
    bundle = (VENDOR / "tus.min.js").read_text()
    for bundled in ("js-base64", "url-parse", "querystringify", "requires-port"):
        assert bundled in bundle, f"{bundled} no longer bundled: update scripts/vendor-web.sh"
        assert (VENDOR / f"{bundled}.LICENSE").read_text().strip(), bundled
    installed = ROOT / "web/node_modules/tus-js-client/dist/tus.min.js"
    if not installed.exists():
        pytest.skip("web/node_modules not installed (scripts/bootstrap.sh runs npm ci)")
    assert (VENDOR / "tus.min.js").read_bytes() == installed.read_bytes(), (
        "run scripts/vendor-web.sh"
    )
