"""The upload page's Content-Security-Policy names exactly the origin its thumbnails come from:
the origin of the URLs the real storage adapters presign (nothing is contacted to presign)."""

from __future__ import annotations

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
