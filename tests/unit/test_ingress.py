"""The ingress stage's decisions (services/ingress/handler.py): an upstream service's
``file.received`` passes only with a verified user_id of an active upstream, an owner and a
bucket it was given, and an upload's size and metadata limits. The registry is a stand-in (pure
logic); the broker's side is in tests/security/."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.ingress.handler import Deps, handle
from shared.errors import NotAllowed
from shared.events import FileReceived, FileScanned
from shared.ports import Upstream
from shared.text import visible_name

BILLING = Upstream(name="billing", owners=("acme",), buckets=("billing-out",))


class Registry:
    def __init__(self, *upstreams: Upstream) -> None:
        self.upstreams = {u.name: u for u in upstreams}

    async def lookup(self, name: str) -> Upstream | None:
        return self.upstreams.get(name)


DEPS = Deps(
    upstreams=Registry(BILLING),
    own_bucket="sluice",
    upstream_buckets=frozenset({"billing-out", "other-out"}),
    max_size_bytes=10 * 1024 * 1024,
    max_metadata_bytes=100,
    clean_name=visible_name,
)


def received(**fields: Any) -> FileReceived:
    base: dict[str, Any] = {
        "file_id": uuid.uuid4(),
        "owner": "acme",
        "source": "s3://billing-out/invoices/42.pdf",
        "size_bytes": 4821,
        "sha256": "a" * 64,
        "content_type": "application/pdf",
        "original_name": "42.pdf",
        "kind": "invoice",
        "metadata": {"customer": 42},
    }
    return FileReceived.new(**{**base, **fields})


async def test_a_legitimate_event_passes_unchanged() -> None:
    event = received()
    assert await handle(event, "billing", DEPS) == [event]


async def test_the_name_loses_bidi_and_zero_width_characters() -> None:
    (out,) = await handle(received(original_name="invoice\u202egpj.exe\u200b"), "billing", DEPS)
    assert isinstance(out, FileReceived)
    assert out.original_name == "invoicegpj.exe"


@pytest.mark.parametrize(
    ("user_id", "fields", "reason"),
    [
        (None, {}, "no user_id"),
        ("mallory", {}, "not an upstream service"),
        ("billing", {"owner": "alice"}, "may not name owner 'alice'"),
        ("billing", {"source": "s3://sluice/alice/x.jpg"}, "may not read bucket 'sluice'"),
        ("billing", {"source": "s3://other-out/x.pdf"}, "may not read bucket 'other-out'"),
        ("billing", {"source": "spool://0b6e"}, "must be s3://"),
        ("billing", {"size_bytes": 64 * 1024 * 1024}, "over the largest upload"),
        ("billing", {"metadata": {"x": "y" * 200}}, "metadata is"),
        ("billing", {"original_name": "\u202e\u200b"}, "nothing but control"),
    ],
)
async def test_what_the_upstream_was_not_given_is_not_allowed(
    user_id: str | None, fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(NotAllowed, match=reason):
        await handle(received(**fields), user_id, DEPS)


async def test_a_bucket_outside_s3_upstream_buckets_is_refused_even_if_given() -> None:
    deps = Deps(
        upstreams=Registry(Upstream("billing", ("acme",), ("billing-out", "secret"))),
        own_bucket="sluice",
        upstream_buckets=frozenset({"billing-out"}),
        max_size_bytes=1024**2,
        max_metadata_bytes=100,
        clean_name=visible_name,
    )
    with pytest.raises(NotAllowed, match="S3_UPSTREAM_BUCKETS"):
        await handle(received(source="s3://secret/x.pdf"), "billing", deps)


async def test_only_file_received_is_taken() -> None:
    scanned = received().follow(FileScanned, scanner="ClamAV", signature_version="1")
    with pytest.raises(NotAllowed, match=r"file\.received only"):
        await handle(scanned, "billing", DEPS)
