"""``sluice gdpr erase --owner alice`` on files in every state (docs/gdpr.md).

A cluster (each stage its own process, a private SeaweedFS) holds alice's and bob's files:
available ones (originals and thumbnails in the bucket); ones kept Base64 in the fallback while
S3 was stopped; one whose message sits in the scan stage's dead-letter queue; and files still
in flight when the erasure starts: uploaded while S3 was down, their store stage retrying, S3
started again as the erasure begins (so their late ``file.stored``, and the fallback worker's
migrations, race the erasure). Afterwards nothing of alice is left: no object under
``alice/``, no row of any table whose text holds ``alice``, no message in any queue; the receipt
is stored with the owner only as its SHA-256. Bob's files are all there, available, with their
bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.adapters.broker import event_message
from shared.events import FileReceived
from tests.faults.checks import REPORTS, queue_depths
from tests.faults.cluster import Cluster
from tests.faults.private_seaweedfs import PrivateSeaweedFS, private_seaweedfs
from tests.faults.workload import _payloads

pytestmark = pytest.mark.faults

PHOTO = next(u for u in _payloads() if u.name == "photo-1200.jpg")


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[PrivateSeaweedFS]:
    with private_seaweedfs(tmp_path / "seaweedfs") as instance:
        yield instance


@pytest.fixture
def cluster(services: object, s3: PrivateSeaweedFS, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path,
        "faults_gdpr",
        s3=s3,
        extra_env={
            "SLUICE_AMQP_RETRY_BASE_DELAY_S": "0.5",
            "SLUICE_AMQP_RETRY_MAX_DELAY_S": "2",
            "S3_TIMEOUT_S": "5",
            # The migration back to S3 waits 20 s after S3's return: the erasure meets the
            # fallback rows (bob's is migrated afterwards).
            "SLUICE_FALLBACK_PROBE_INTERVAL_S": "20",
            # A removed key stops working within the key cache's TTL: none here, to check it.
            "SLUICE_GATEWAY_KEY_CACHE_TTL_S": "0",
        },
    )
    cluster.prepare()
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def _upload(cluster: Cluster, key: str, count: int, name: str) -> list[str]:
    ids = []
    with httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for n in range(count):
            answer = client.post(
                "/v1/files",
                files={"file": (f"{name}-{n}.jpg", PHOTO.data)},
                data={"metadata": json.dumps({"who": name})},
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["file_id"])
    return ids


def _statuses(cluster: Cluster, ids: list[str]) -> dict[str, int]:
    rows = cluster.sql(
        "SELECT status, count(*) FROM files WHERE file_id = ANY(%s::uuid[]) GROUP BY status", ids
    )
    return {status: int(n) for status, n in rows}


def _keys(cluster: Cluster, prefix: str) -> list[str]:
    pages = (
        cluster.s3_client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=cluster.bucket, Prefix=prefix)
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _rows_mentioning(cluster: Cluster, text: str) -> dict[str, int]:
    tables = [
        name
        for (name,) in cluster.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_type = 'BASE TABLE'"
        )
    ]
    found = {}
    for table in tables:
        (count,) = cluster.sql(
            f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s', f"%{text}%"
        )[0]
        if count:
            found[table] = count
    return found


def _dead_letter(cluster: Cluster, owner: str) -> str:
    """A ``file.received`` of ``owner`` whose spooled bytes are gone: the scan stage
    dead-letters it (SourceMissing) and the commit stage records the file's attention."""
    file_id = uuid.uuid4()
    event = FileReceived.new(
        file_id=file_id,
        owner=owner,
        source=f"spool://{file_id}",
        size_bytes=len(PHOTO.data),
        sha256=PHOTO.sha256,
        content_type="image/jpeg",
        original_name=f"{owner}-lost.jpg",
        metadata={"who": owner},
    )

    async def publish() -> None:
        import aio_pika

        connection = await aio_pika.connect(cluster.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                event_message(event), routing_key=f"{cluster.prefix}.scan"
            )

    asyncio.run(publish())
    return str(file_id)


def test_erase_leaves_nothing_of_the_owner_and_keeps_the_others(
    cluster: Cluster, s3: PrivateSeaweedFS
) -> None:
    alice = cluster.api_key
    bob = cluster.cli("keys", "create", "--owner", "bob").strip()

    alice_available = _upload(cluster, alice, 4, "alice")
    bob_available = _upload(cluster, bob, 3, "bob")
    everyone = alice_available + bob_available
    cluster.wait_for(lambda: _statuses(cluster, everyone) == {"available": 7}, 120, "available")
    dead = _dead_letter(cluster, "alice")
    cluster.wait_for(lambda: queue_depths(cluster)[f"{cluster.prefix}.scan.dlq"] == 1, 60, "dead")

    s3.stop()
    alice_fallback = _upload(cluster, alice, 3, "alice")
    bob_fallback = _upload(cluster, bob, 1, "bob")
    cluster.wait_for(
        lambda: _statuses(cluster, alice_fallback + bob_fallback) == {"fallback": 4},
        180,
        "fallback",
    )
    alice_in_flight = _upload(cluster, alice, 3, "alice")
    cluster.wait_for(lambda: _statuses(cluster, alice_in_flight), 30, "in flight recorded")
    states = _statuses(cluster, alice_in_flight)
    assert not set(states) & {"available", "fallback"}, states

    s3.start()
    s3.ensure_bucket(cluster.bucket)
    # What a rescan moved to quarantine (services/scan/rescan.py) is the owner's too.
    moved = {
        owner: f"_quarantine/{owner}/{file_ids[0]}-20261203T000000Z-photo.jpg"
        for owner, file_ids in (("alice", alice_available), ("bob", bob_available))
    }
    for key in moved.values():
        cluster.s3_client().put_object(Bucket=cluster.bucket, Key=key, Body=b"quarantined")
    started = time.monotonic()
    receipt = json.loads(cluster.cli("gdpr", "erase", "--owner", "alice", "--json"))
    erase_s = time.monotonic() - started

    def settled() -> bool:
        return not any(queue_depths(cluster).values()) and _statuses(cluster, bob_fallback) == {
            "available": 1
        }

    cluster.wait_for(settled, 180, "queues drained")
    time.sleep(3)  # a late stage write, migration or dead letter would land by now
    assert not any(queue_depths(cluster).values())
    assert _keys(cluster, "alice/") == []
    assert _keys(cluster, "_quarantine/alice/") == []
    assert _rows_mentioning(cluster, "alice") == {}
    alice_ids = alice_available + alice_fallback + alice_in_flight + [dead]
    assert _rows_mentioning(cluster, alice_ids[0]) == {}
    assert [p.name for p in cluster.spool_dir.iterdir() if p.name[:36] in alice_ids] == []

    # The receipt: stored, without the name.
    stored = cluster.sql("SELECT owner_sha256, requested_by, counts FROM gdpr_erasures")
    assert stored == [
        (hashlib.sha256(b"alice").hexdigest(), receipt["requested_by"], receipt["counts"])
    ]
    assert receipt["counts"]["rows_left"] == 0
    assert receipt["counts"]["files"] >= 10  # available, fallback, dead-lettered, in flight
    assert receipt["counts"]["fallback_rows"] == 3
    assert receipt["counts"]["dead_letters"] == 1
    # alice's key is gone.
    answer = httpx.get(f"{cluster.url}/v1/files", headers={"Authorization": f"Bearer {alice}"})
    assert answer.status_code == 401

    # bob: untouched.
    bob_ids = bob_available + bob_fallback
    assert _statuses(cluster, bob_ids) == {"available": 4}
    with httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {bob}"}, timeout=60
    ) as client:
        for file_id in bob_ids:
            content = client.get(f"/v1/files/{file_id}/content")
            assert content.status_code == 200
            assert hashlib.sha256(content.content).hexdigest() == PHOTO.sha256
    assert len(_keys(cluster, "bob/")) == 4 * 3
    assert _keys(cluster, "_quarantine/bob/") == [moved["bob"]]

    REPORTS.append(
        f"[fault gdpr-erase] alice_files={len(alice_ids)} (available=4 fallback=3 "
        f"dead_lettered=1 in_flight=3) receipt={receipt['counts']} erase_seconds={erase_s:.1f} "
        f"alice_objects_left=0 alice_rows_left=0 queues_left=0 bob_files_intact={len(bob_ids)}"
    )
