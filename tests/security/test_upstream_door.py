"""The upstream services' door, against the real RabbitMQ and a real pipeline (``sluice run``).

An upstream service is added with ``sluice upstream add`` (its own RabbitMQ user, for owner
``acme`` and the pipeline's upstream bucket) and then tries, as that user, everything issue 11
lists: publishing an internal event, another routing key, declaring a queue, lying about its
``user_id``, omitting it, naming another owner, copying from Sluice's own bucket. Each is refused
by the broker or dead-lettered in ``<prefix>.ingress.dlq`` with its reason, and nothing changes
in the bucket or the database; a legitimate ``file.received`` still ends ``available``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest

from shared import devservices
from shared.events import FileReceived, FileScanned
from shared.topology import Topology
from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline

pytestmark = pytest.mark.security

NAME = "security"
SAMPLE = ROOT / "samples" / "document.pdf"


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp_path_factory.mktemp("security"), NAME)


def _sluice(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        env=pipeline.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def upstream(pipeline: Pipeline) -> Iterator[dict[str, Any]]:
    """An upstream service ``billing-<random>`` for owner ``acme`` and the upstream bucket."""
    name = f"billing-{uuid.uuid4().hex[:8]}"
    bucket = f"{pipeline.bucket}-upstream"
    added = _sluice(
        pipeline, "upstream", "add", name, "--owner", "acme", "--bucket", bucket, "--json"
    )
    assert added.returncode == 0, added.stderr
    credentials: dict[str, Any] = json.loads(added.stdout)
    assert credentials["exchange"] == f"{NAME}.ingress"
    yield credentials
    _sluice(pipeline, "upstream", "remove", name)


def _put_upstream_object(pipeline: Pipeline, key: str, data: bytes) -> str:
    bucket = f"{pipeline.bucket}-upstream"
    devservices.s3_client().put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def _received(source: str, data: bytes, owner: str = "acme", name: str = "42.pdf") -> FileReceived:
    return FileReceived.new(
        file_id=uuid.uuid4(),
        owner=owner,
        source=source,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="application/pdf",
        original_name=name,
        kind="invoice",
        metadata={"customer": 42},
    )


def _message(event: Any, user_id: str | None) -> aio_pika.Message:
    return aio_pika.Message(
        body=event.model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event.event_id),
        user_id=user_id,
    )


async def _publish(url: str, exchange: str, routing_key: str, message: aio_pika.Message) -> None:
    """Publish as the upstream user, with a publisher confirm; raises what the broker says."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(message, routing_key=routing_key, timeout=10)


async def _declare_queue(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue("mallory.copy", durable=True)


async def _dead_letters(pipeline: Pipeline) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The ingress dead-letter queue: (body, headers) of each, left in place."""
    connection = await aio_pika.connect(pipeline.env["SLUICE_AMQP_URL"])
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(prefix=NAME).dead_letter_queue("ingress"))
        found = []
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            found.append((json.loads(message.body), dict(message.headers or {})))
        await channel.close()  # unacked: they go back to the queue
    return found


async def _wait_dead_lettered(pipeline: Pipeline, count: int) -> list[dict[str, Any]]:
    for _ in range(150):
        letters = await _dead_letters(pipeline)
        if len(letters) >= count:
            return [{**headers, "file_id": body["file_id"]} for body, headers in letters]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} dead letters expected in the ingress DLQ, got {len(letters)}")


def _objects(pipeline: Pipeline) -> set[str]:
    client = devservices.s3_client()
    return {
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=pipeline.bucket)
        for item in page.get("Contents", [])
    }


def test_the_broker_refuses_what_an_upstream_user_may_not_do(
    pipeline: Pipeline, upstream: dict[str, Any]
) -> None:
    url, name = upstream["amqp_url"], upstream["name"]
    data = SAMPLE.read_bytes()
    event = _received(_put_upstream_object(pipeline, "forged/a.pdf", data), data)
    scanned = event.follow(FileScanned, scanner="ClamAV forged", signature_version="0")
    topology = Topology(prefix=NAME)
    before = _objects(pipeline), pipeline.sql("SELECT count(*) FROM file_events")[0][0]

    # An internal event on the internal exchange: the store stage never sees it.
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        asyncio.run(_publish(url, topology.exchange, "file.scanned", _message(scanned, name)))
    # Another routing key on its own exchange (topic permission).
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        asyncio.run(
            _publish(url, topology.ingress_exchange, "file.scanned", _message(scanned, name))
        )
    # Straight to a stage queue through the default exchange.
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        asyncio.run(_publish(url, "", topology.queue("store"), _message(scanned, name)))
    # Declaring anything (a queue to copy events into).
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        asyncio.run(_declare_queue(url))
    # Another user's name in user_id: RabbitMQ's validated user-id.
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        asyncio.run(
            _publish(url, topology.ingress_exchange, "file.received", _message(event, "sluice"))
        )

    assert (_objects(pipeline), pipeline.sql("SELECT count(*) FROM file_events")[0][0]) == before


def test_forged_file_received_are_dead_lettered_with_their_reason_and_change_nothing(
    pipeline: Pipeline, upstream: dict[str, Any]
) -> None:
    url, name = upstream["amqp_url"], upstream["name"]
    data = SAMPLE.read_bytes()
    own = pipeline.bucket
    devservices.s3_client().put_object(Bucket=own, Key="alice/secret.pdf", Body=data)
    before = _objects(pipeline)
    forged = {
        "no user_id": (_received(_put_upstream_object(pipeline, "f/1.pdf", data), data), None),
        "another owner": (
            _received(_put_upstream_object(pipeline, "f/2.pdf", data), data, owner="alice"),
            name,
        ),
        "Sluice's own bucket": (_received(f"s3://{own}/alice/secret.pdf", data), name),
    }
    exchange = Topology(prefix=NAME).ingress_exchange
    for event, user_id in forged.values():
        asyncio.run(_publish(url, exchange, "file.received", _message(event, user_id)))

    letters = asyncio.run(_wait_dead_lettered(pipeline, len(forged)))

    reasons = {letter["file_id"]: letter["x-sluice-error-message"] for letter in letters}
    assert {letter["x-sluice-error-type"] for letter in letters} == {"NotAllowed"}
    expected = {
        "no user_id": "no user_id property",
        "another owner": "may not name owner 'alice'",
        "Sluice's own bucket": f"may not read bucket '{own}'",
    }
    for case, (event, _) in forged.items():
        assert expected[case] in reasons[str(event.file_id)], (case, reasons)
    ids = [str(event.file_id) for event, _ in forged.values()]
    assert pipeline.sql("SELECT count(*) FROM files WHERE file_id = ANY(%s::uuid[])", ids) == [(0,)]
    assert _objects(pipeline) == before
    print(
        f"\n[security upstream-door] forged={len(forged)} dead_lettered={len(letters)} "
        f"rows_changed=0 objects_changed=0"
    )


def test_a_legitimate_upstream_file_flows_end_to_end(
    pipeline: Pipeline, upstream: dict[str, Any]
) -> None:
    url, name = upstream["amqp_url"], upstream["name"]
    data = SAMPLE.read_bytes()
    event = _received(_put_upstream_object(pipeline, "invoices/42.pdf", data), data)
    asyncio.run(_publish(url, upstream["exchange"], upstream["routing_key"], _message(event, name)))
    for _ in range(300):
        rows = pipeline.sql(
            "SELECT status, owner, original_name FROM files WHERE file_id = %s", event.file_id
        )
        if rows and rows[0][0] in ("available", "rejected"):
            break
        asyncio.run(asyncio.sleep(0.2))
    assert rows == [("available", "acme", "42.pdf")], rows
    stored = [key for key in _objects(pipeline) if str(event.file_id) in key]
    assert len(stored) == 1 and stored[0].startswith("acme/"), stored


def test_a_removed_upstream_cannot_connect(pipeline: Pipeline) -> None:
    name = f"gone-{uuid.uuid4().hex[:8]}"
    bucket = f"{pipeline.bucket}-upstream"
    added = _sluice(
        pipeline, "upstream", "add", name, "--owner", "acme", "--bucket", bucket, "--json"
    )
    assert added.returncode == 0, added.stderr
    url = json.loads(added.stdout)["amqp_url"]
    listed = json.loads(_sluice(pipeline, "upstream", "list", "--json").stdout)
    assert {"name": name, "broker_user": True}.items() <= next(
        row for row in listed if row["name"] == name
    ).items()

    removed = _sluice(pipeline, "upstream", "remove", name)
    assert removed.returncode == 0, removed.stderr

    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        asyncio.run(aio_pika.connect(url))
    assert name not in {
        row["name"] for row in json.loads(_sluice(pipeline, "upstream", "list", "--json").stdout)
    }
    again = _sluice(
        pipeline, "upstream", "add", name, "--owner", "acme", "--bucket", Path(bucket).name
    )
    assert again.returncode == 0, again.stderr  # a removed name can be given again
    _sluice(pipeline, "upstream", "remove", name)


def test_add_refuses_sluices_own_bucket_and_unknown_buckets(pipeline: Pipeline) -> None:
    own = _sluice(
        pipeline, "upstream", "add", "x-own", "--owner", "acme", "--bucket", pipeline.bucket
    )
    assert own.returncode != 0 and "own bucket" in own.stderr + own.stdout
    other = _sluice(pipeline, "upstream", "add", "x-other", "--owner", "acme", "--bucket", "nope")
    assert other.returncode != 0 and "S3_UPSTREAM_BUCKETS" in other.stderr + other.stdout


def test_an_upstream_html_file_named_jpg_is_rejected_and_a_bidi_name_is_cleaned(
    pipeline: Pipeline, upstream: dict[str, Any]
) -> None:
    """The upload policy holds on the bus door too: HTML claiming to be ``image/jpeg`` under a
    ``.jpg`` name is rejected (``policy``), nothing stored; a real PDF whose name hides a bidi
    override and a zero-width space is kept under its visible name."""
    url, name = upstream["amqp_url"], upstream["name"]
    html = b"<!doctype html><html><body><script>alert(1)</script></body></html>\n" * 20
    disguised = _received(
        _put_upstream_object(pipeline, "in/cat.jpg", html), html, name="cat.jpg"
    ).model_copy(update={"content_type": "image/jpeg"})
    data = SAMPLE.read_bytes()
    spoofed = _received(
        _put_upstream_object(pipeline, "in/spoof.pdf", data), data, name="report\u202e\u200b.pdf"
    )
    for event in (disguised, spoofed):
        asyncio.run(
            _publish(url, upstream["exchange"], upstream["routing_key"], _message(event, name))
        )
    final: dict[str, tuple[Any, ...]] = {}
    for _ in range(300):
        rows = pipeline.sql(
            "SELECT file_id::text, status, coalesce(status_reason, ''), original_name,"
            " content_type FROM files WHERE file_id = ANY(%s::uuid[])",
            [str(disguised.file_id), str(spoofed.file_id)],
        )
        final = {row[0]: row[1:] for row in rows if row[1] in ("available", "rejected")}
        if len(final) == 2:
            break
        asyncio.run(asyncio.sleep(0.2))
    status, reason, _, _ = final[str(disguised.file_id)]
    assert (status, reason.split(":")[0]) == ("rejected", "policy"), final
    assert not [key for key in _objects(pipeline) if str(disguised.file_id) in key]
    assert final[str(spoofed.file_id)][0] == "available", final
    assert final[str(spoofed.file_id)][2] == "report.pdf"
    assert final[str(spoofed.file_id)][3] == "application/pdf"
