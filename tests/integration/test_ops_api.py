"""The ops HTTP API against the real gateway, RabbitMQ and PostgreSQL (prefix ``t_ops_api``,
database ``sluice_test_ops_api``).

Dead letters are made by the real run loop: a scan and a commit consumer whose handlers fail on
purpose (``SourceMissing``, ``ChecksumMismatch``, ``InvalidEvent``) take three ``file.received``
events and dead-letter them to ``t_ops_api.scan.dlq`` and ``t_ops_api.commit.dlq``. Nothing is
skipped: an unreachable service fails every test here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.keys import create_key, list_keys
from services.gateway.ops_api import MAX_REPLAY_LIMIT
from shared.adapters import broker, db
from shared.errors import ChecksumMismatch, InvalidEvent, SourceMissing
from shared.events import (
    BaseEvent,
    FileDeadLettered,
    FileDeadLetterPurged,
    FileReceived,
    parse_event,
)
from shared.runner import StageConsumer
from shared.settings import (
    AmqpSettings,
    DatabaseSettings,
    Settings,
)
from shared.stage import Stage
from shared.topology import Topology
from tests.integration.dlq_support import Broker
from tests.integration.dlq_support import received as support_received
from tests.integration.gateway.support import TcpProxy
from tests.localenv import FreshDatabase, Local

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "t_ops_api"
DATABASE = "sluice_test_ops_api"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
AMQP = AmqpSettings(url=AMQP_URL, prefix=PREFIX, publish_timeout_s=5.0)
TOPOLOGY = Topology.of(AMQP)


@dataclass
class Ops:
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    ops: dict[str, str]  # headers with an ops:admin key
    read: dict[str, str]  # headers with an ops:read key
    upload: dict[str, str]  # headers with an upload key


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture(scope="module")
async def database(fresh_database: FreshDatabase) -> DatabaseSettings:
    return await fresh_database(DATABASE)


@pytest.fixture(scope="module")
async def gateway(
    database: DatabaseSettings, local: Local, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ops]:
    # S3: the local SeaweedFS's shared test bucket (TEST_BUCKETS)
    settings = local.settings(tmp_path_factory.mktemp("spool"), amqp=AMQP, database=database)
    pool = await db.create_pool(database)
    ops_key = await create_key(pool, "night-shift", "ops:admin")
    read_key = await create_key(pool, "day-watch", "ops:read")
    upload_key = await create_key(pool, "acme")
    try:
        async with running(settings) as client:
            yield Ops(
                client,
                pool,
                {"Authorization": f"Bearer {ops_key}"},
                {"Authorization": f"Bearer {read_key}"},
                {"Authorization": f"Bearer {upload_key}"},
            )
    finally:
        await pool.close()
        connection = await broker.connect(AMQP)
        async with connection:
            await TOPOLOGY.delete(await connection.channel())


@pytest.fixture
async def amqp(gateway: Ops) -> AsyncIterator[Broker]:
    """The test prefix on RabbitMQ, with every queue of it emptied before the test."""
    connection = await broker.connect(AMQP)
    channel = await connection.channel()
    for name in TOPOLOGY.all_queues():
        await (await channel.get_queue(name)).purge()
    await channel.close()
    yield Broker(AMQP, TOPOLOGY, connection)
    await connection.close()


def received(name: str) -> FileReceived:
    return support_received("acme").model_copy(
        update={"original_name": name, "source": f"spool://{uuid.uuid4()}.bin"}
    )


async def scan_fails(event: BaseEvent) -> list[BaseEvent]:
    assert isinstance(event, FileReceived)
    if event.original_name.endswith(".bad"):
        raise ChecksumMismatch("sha-256 differs", file_id=str(event.file_id))
    raise SourceMissing("no such spool entry", file_id=str(event.file_id))


async def commit_fails(event: BaseEvent) -> list[BaseEvent]:
    if isinstance(event, FileDeadLettered):  # the notices of these failures are recorded
        return []
    raise InvalidEvent("refused on purpose", event_id=str(event.event_id))


@dataclass
class Failed:
    """The events dead-lettered by :func:`failed`: by name, and by the stage queue."""

    events: dict[str, FileReceived]


@pytest.fixture
async def failed(amqp: Broker) -> Failed:
    """Three events, each dead-lettered in scan (two ``SourceMissing``, one
    ``ChecksumMismatch``) and in commit (``InvalidEvent``) by the real run loop."""
    events = {name: received(name) for name in ("a.png", "b.png", "c.bad")}
    consumers = [
        StageConsumer(Stage("scan", scan_fails), AMQP, TOPOLOGY),
        StageConsumer(Stage("commit", commit_fails), AMQP, TOPOLOGY),
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        publisher = await amqp.publisher()
        for event in events.values():
            await publisher.publish(event)
        deadline = asyncio.get_running_loop().time() + 15
        while (
            await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) < 3
            or await amqp.depth(TOPOLOGY.dead_letter_queue("commit")) < 3
        ):
            assert asyncio.get_running_loop().time() < deadline, "dead letters did not arrive"
            await asyncio.sleep(0.05)
    finally:
        for consumer in consumers:
            await consumer.stop()
    return Failed(events)


def error_of(response: httpx.Response) -> tuple[str, str]:
    body = response.json()
    return body["error"]["code"], body["error"]["message"]


# -- keys and scopes ---------------------------------------------------------------------------


async def test_no_or_unknown_key_is_401_on_every_ops_route(gateway: Ops) -> None:
    unknown = {"Authorization": "Bearer slk_" + "A" * 43}
    for headers in ({}, unknown, {"Authorization": "Bearer nope"}):
        for method, path in (
            ("GET", "/ops/api/whoami"),
            ("GET", "/ops/api/status"),
            ("GET", "/ops/api/dead-letters"),
            ("GET", f"/ops/api/dead-letters/{uuid.uuid4()}"),
            ("POST", "/ops/api/dead-letters/replay"),
            ("POST", "/ops/api/dead-letters/purge"),
        ):
            response = await gateway.client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert error_of(response)[0] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_each_scope_is_403_on_the_others_routes(gateway: Ops) -> None:
    for method, path in (
        ("GET", "/ops/api/whoami"),
        ("GET", "/ops/api/status"),
        ("GET", "/ops/api/dead-letters"),
        ("POST", "/ops/api/dead-letters/replay"),
    ):
        response = await gateway.client.request(
            method, path, headers=gateway.upload, json={"dry_run": True}
        )
        assert response.status_code == 403, response.text
        assert error_of(response) == (
            "forbidden",
            "this is an upload key; this route needs an ops:read or ops:admin key",
        )
        assert response.headers["www-authenticate"] == (
            'Bearer realm="sluice", error="insufficient_scope", scope="ops:read"'
        )
    purge = await gateway.client.post(
        "/ops/api/dead-letters/purge", headers=gateway.upload, json={}
    )
    assert purge.status_code == 403
    assert error_of(purge)[1] == "this is an upload key; this route needs an ops:admin key"

    for ops_key, scope in ((gateway.ops, "ops:admin"), (gateway.read, "ops:read")):
        listing = await gateway.client.get("/v1/files", headers=ops_key)
        assert listing.status_code == 403
        assert error_of(listing)[1] == f"this is an {scope} key; this route needs an upload key"
        assert 'scope="upload"' in listing.headers["www-authenticate"]
        upload = await gateway.client.post(
            "/v1/files", headers=ops_key, files={"file": ("a.png", b"\x89PNG", "image/png")}
        )
        assert upload.status_code == 403
    assert (await gateway.client.get("/v1/files", headers=gateway.upload)).status_code == 200


async def test_whoami_names_the_keys_owner_and_scope(gateway: Ops) -> None:
    for headers, expected in (
        (gateway.ops, {"owner": "night-shift", "scope": "ops:admin"}),
        (gateway.read, {"owner": "day-watch", "scope": "ops:read"}),
    ):
        response = await gateway.client.get("/ops/api/whoami", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == expected


async def test_a_read_key_reads_and_dry_runs_but_cannot_replay_or_purge(
    gateway: Ops, failed: Failed, amqp: Broker
) -> None:
    status = await gateway.client.get("/ops/api/status", headers=gateway.read)
    assert status.status_code == 200, status.text
    listing = await gateway.client.get("/ops/api/dead-letters", headers=gateway.read)
    assert listing.status_code == 200 and listing.json()["count"] == 6
    event_id = failed.events["a.png"].event_id
    shown = await gateway.client.get(f"/ops/api/dead-letters/{event_id}", headers=gateway.read)
    assert shown.status_code == 200 and shown.json()["letter"]["stage"] == "scan"
    dry = await gateway.client.post(
        "/ops/api/dead-letters/replay",
        json={"stage": "scan", "dry_run": True},
        headers=gateway.read,
    )
    assert dry.status_code == 200, dry.text
    assert len(dry.json()["message_ids"]) == 3 and dry.json()["replayed"] == 0

    for path, body in (
        ("/ops/api/dead-letters/replay", {"stage": "scan"}),
        ("/ops/api/dead-letters/replay", {"stage": "scan", "dry_run": False}),
        ("/ops/api/dead-letters/purge", {"stage": "scan", "reason": "x", "confirm": True}),
    ):
        refused = await gateway.client.post(path, json=body, headers=gateway.read)
        assert refused.status_code == 403, (path, refused.text)
        assert error_of(refused) == (
            "forbidden",
            "this is an ops:read key; this route needs an ops:admin key",
        )
        assert refused.headers["www-authenticate"] == (
            'Bearer realm="sluice", error="insufficient_scope", scope="ops:admin"'
        )
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) == 3
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("commit")) == 3
    assert await amqp.depth(TOPOLOGY.queue("scan")) == 0


async def test_keys_keep_their_scope_and_only_a_hash(gateway: Ops) -> None:
    [info] = await list_keys(gateway.pool, "night-shift")
    assert info.scope == "ops:admin"
    [reader] = await list_keys(gateway.pool, "day-watch")
    assert reader.scope == "ops:read"
    stored = await gateway.pool.fetchrow(
        "SELECT key_hash, key_prefix FROM api_keys WHERE key_id = $1", info.key_id
    )
    key = gateway.ops["Authorization"].removeprefix("Bearer ")
    assert len(stored["key_hash"]) == 32 and key not in str(dict(stored))
    with pytest.raises(ValueError, match="unknown scope"):
        await create_key(gateway.pool, "x", "ops")  # type: ignore[arg-type]


async def create_with_cli(database: DatabaseSettings, *arguments: str) -> tuple[str, str]:
    """``sluice keys create ARGUMENTS...`` in a subprocess: (stdout, stderr); it must succeed."""
    env = {**os.environ, "SLUICE_DATABASE_URL": database.url, "SLUICE_LOG_LEVEL": "warning"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "keys", "create", *arguments,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().strip(), err.decode()


async def test_cli_creates_keys_of_each_ops_scope_that_only_open_ops_routes(
    gateway: Ops, database: DatabaseSettings
) -> None:
    dry_run = {"dry_run": True}
    for owner, scope in (("cli-day", "ops:read"), ("cli-night", "ops:admin")):
        key, _ = await create_with_cli(database, owner, "--scope", scope)
        headers = {"Authorization": f"Bearer {key}"}

        assert (await gateway.client.get("/ops/api/status", headers=headers)).status_code == 200
        assert (await gateway.client.get("/v1/files", headers=headers)).status_code == 403
        purge = await gateway.client.post("/ops/api/dead-letters/purge", json={}, headers=headers)
        # an ops:admin key passes the scope check and is refused for the body (422)
        assert purge.status_code == (403 if scope == "ops:read" else 422), purge.text
        dry = await gateway.client.post(
            "/ops/api/dead-letters/replay", json=dry_run, headers=headers
        )
        assert dry.status_code == 200, dry.text
        [info] = await list_keys(gateway.pool, owner)
        assert info.scope == scope


async def test_cli_ops_flag_is_a_deprecated_alias_of_ops_admin(
    gateway: Ops, database: DatabaseSettings
) -> None:
    key, warning = await create_with_cli(database, "cli-legacy", "--ops")
    assert "--ops is deprecated; use --scope ops:admin" in warning
    whoami = await gateway.client.get("/ops/api/whoami", headers={"Authorization": f"Bearer {key}"})
    assert whoami.json() == {"owner": "cli-legacy", "scope": "ops:admin"}


# -- status and listing ------------------------------------------------------------------------


async def test_status_counts_each_stages_dead_letters(gateway: Ops, failed: Failed) -> None:
    expected = {
        "ingress": 0,
        "scan": 3,
        "store": 0,
        "thumbnail": 0,
        "commit": 3,
        "purge": 0,
        "fallback": None,
        "pdftext": 0,  # the optional text transforms: their queues exist, empty
        "ocr": 0,
        "video": 0,
        "mirror": 0,  # the optional mirror: its queues exist too, unbound
    }
    deadline = asyncio.get_running_loop().time() + 20  # RabbitMQ's statistics lag up to 5 s
    while True:
        response = await gateway.client.get("/ops/api/status", headers=gateway.ops)
        assert response.status_code == 200, response.text
        stages = {stage["stage"]: stage for stage in response.json()["stages"]}
        counts = {name: stage["dead_letters"] for name, stage in stages.items()}
        # The consumers the fixture stopped leave the statistics as late as the dead letters.
        settled = stages["scan"]["consumers"] == 0
        if (counts == expected and settled) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)

    assert list(stages) == [
        *("ingress", "scan", "store", "thumbnail", "commit", "purge", "fallback"),
        *("pdftext", "ocr", "video", "mirror"),
    ]
    assert counts == expected
    assert stages["scan"]["queue"] == "t_ops_api.scan"
    assert stages["scan"]["ready"] == 0 and stages["scan"]["consumers"] == 0
    # the fallback worker's failures go to the store stage's dead-letter queue: it has none
    assert stages["fallback"]["queue"] == "t_ops_api.fallback"


async def test_list_filters_and_leaves_the_queues_as_they_were(
    gateway: Ops, failed: Failed, amqp: Broker
) -> None:
    async def listed(**query: Any) -> list[dict[str, Any]]:
        response = await gateway.client.get(
            "/ops/api/dead-letters", params=query, headers=gateway.ops
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["dead_letters"])
        letters: list[dict[str, Any]] = body["dead_letters"]
        return letters

    every = await listed()
    assert [(d["stage"], d["error_type"]) for d in every] == [
        ("scan", "SourceMissing"),
        ("scan", "SourceMissing"),
        ("scan", "ChecksumMismatch"),
        ("commit", "InvalidEvent"),
        ("commit", "InvalidEvent"),
        ("commit", "InvalidEvent"),
    ]
    bad = failed.events["c.bad"]
    head = every[2]
    assert (head["file_id"], head["owner"], head["event_type"]) == (
        str(bad.file_id),
        "acme",
        "file.received",
    )
    assert head["message_id"] == str(bad.event_id)
    assert head["error_message"].startswith("sha-256 differs")
    assert head["attempts"] == 1 and head["last_failed_at"] is not None

    assert len(await listed(stage="commit")) == 3
    assert len(await listed(stage=["scan", "commit"])) == 6
    assert [d["stage"] for d in await listed(error_type="ChecksumMismatch")] == ["scan"]
    by_file = await listed(file_id=str(bad.file_id))
    assert [(d["stage"], d["error_type"]) for d in by_file] == [
        ("scan", "ChecksumMismatch"),
        ("commit", "InvalidEvent"),
    ]
    assert await listed(older_than="1h") == []
    assert len(await listed(older_than="0")) == 6
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) == 3
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("commit")) == 3


async def test_bad_filters_are_422(gateway: Ops) -> None:
    for query in (
        {"stage": "nope"},
        {"older_than": "soon"},
        {"older_than": "-5m"},
        {"file_id": "not-a-uuid"},
        {"error_type": ""},
    ):
        response = await gateway.client.get(
            "/ops/api/dead-letters", params=query, headers=gateway.ops
        )
        assert response.status_code == 422, query
        code, message = error_of(response)
        assert code == "invalid_request" and next(iter(query)) in message
    for body in (
        {"limit": 0},
        {"limit": MAX_REPLAY_LIMIT + 1},
        {"limit": 1000, "rate_per_s": 1},  # 1000 s: longer than a request may last
        {"rate_per_s": 0},
        {"stage": "nope"},
        {"older_than": "yesterday"},
        {"dry_run": True, "surprise": 1},
    ):
        response = await gateway.client.post(
            "/ops/api/dead-letters/replay", json=body, headers=gateway.ops
        )
        assert response.status_code == 422, body
        assert error_of(response)[0] == "invalid_request"


# -- show, replay, purge -----------------------------------------------------------------------


async def test_show_one_dead_letter_or_404(gateway: Ops, failed: Failed) -> None:
    event = failed.events["a.png"]
    response = await gateway.client.get(
        f"/ops/api/dead-letters/{event.event_id}", headers=gateway.ops
    )
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["letter"]["file_id"] == str(event.file_id)
    assert detail["letter"]["stage"] == "scan"  # the first queue that holds it
    assert detail["body"]["file_id"] == str(event.file_id)
    assert detail["properties"]["type"] == "file.received"
    assert detail["headers"]["x-sluice-error-type"] == "SourceMissing"
    [failure] = detail["history"]
    assert (failure["event"], failure["error_type"], failure["attempts"]) == (
        "failed",
        "SourceMissing",
        1,
    )

    missing = await gateway.client.get(f"/ops/api/dead-letters/{uuid.uuid4()}", headers=gateway.ops)
    assert missing.status_code == 404
    assert error_of(missing)[0] == "not_found"


async def test_dry_run_moves_nothing_then_replay_moves_only_the_match(
    gateway: Ops, failed: Failed, amqp: Broker
) -> None:
    a, b, bad = (str(failed.events[name].event_id) for name in ("a.png", "b.png", "c.bad"))
    dry = await gateway.client.post(
        "/ops/api/dead-letters/replay",
        json={"stage": "scan", "dry_run": True},
        headers=gateway.ops,
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["replayed"] == 0
    assert dry.json()["message_ids"] == [a, b, bad]
    assert [(d["stage"], d["error_type"]) for d in dry.json()["letters"]] == [
        ("scan", "SourceMissing"),
        ("scan", "SourceMissing"),
        ("scan", "ChecksumMismatch"),
    ]
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) == 3
    assert await amqp.depth(TOPOLOGY.queue("scan")) == 0

    one = await gateway.client.post(
        "/ops/api/dead-letters/replay",
        json={"stage": "scan", "error_type": "ChecksumMismatch"},
        headers=gateway.ops,
    )

    assert one.status_code == 200, one.text
    assert (one.json()["replayed"], one.json()["message_ids"]) == (1, [bad])
    assert [m.message_id for m in await amqp.drain(TOPOLOGY.queue("scan"))] == [bad]
    rest = await gateway.client.post(
        "/ops/api/dead-letters/replay", json={"stage": ["scan"], "limit": 5}, headers=gateway.ops
    )
    assert rest.json()["replayed"] == 2
    assert [m.message_id for m in await amqp.drain(TOPOLOGY.queue("scan"))] == [a, b]  # in order
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) == 0
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("commit")) == 3  # untouched


async def test_purge_needs_confirm_and_a_reason_and_records_each_file(
    gateway: Ops, failed: Failed, amqp: Broker
) -> None:
    async def purge(body: dict[str, Any]) -> httpx.Response:
        return await gateway.client.post(
            "/ops/api/dead-letters/purge", json=body, headers=gateway.ops
        )

    unconfirmed = await purge({"stage": "commit", "reason": "bad batch"})
    assert unconfirmed.status_code == 400
    assert error_of(unconfirmed)[0] == "confirm_required"
    for no_reason in ({"stage": "commit", "confirm": True}, {"reason": "  ", "confirm": True}):
        response = await purge(no_reason)
        assert response.status_code == 422
        assert "reason" in error_of(response)[1]
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("commit")) == 3
    await amqp.drain(TOPOLOGY.queue("commit"))  # the file.received events themselves

    bad = failed.events["c.bad"]
    done = await purge(
        {"file_id": str(bad.file_id), "stage": "commit", "reason": "bad batch", "confirm": True}
    )

    assert done.status_code == 200, done.text
    assert (done.json()["purged"], done.json()["recorded"]) == (1, 1)
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("commit")) == 2
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) == 3
    [record] = [parse_event(m.body) for m in await amqp.drain(TOPOLOGY.queue("commit"))]
    assert isinstance(record, FileDeadLetterPurged)
    assert (record.file_id, record.stage, record.dead_letter_event_id) == (
        bad.file_id,
        "commit",
        bad.event_id,
    )
    assert (record.error_type, record.reason) == ("InvalidEvent", "bad batch (by night-shift)")


# -- broker down -------------------------------------------------------------------------------


async def test_broker_unreachable_is_503(
    database: DatabaseSettings, gateway: Ops, local: Local, tmp_path: Path
) -> None:
    proxy = TcpProxy()
    port = await proxy.start()
    amqp = AmqpSettings(url=f"amqp://guest:guest@127.0.0.1:{port}/", prefix=PREFIX)
    async with running(local.settings(tmp_path, amqp=amqp, database=database)) as client:
        assert (await client.get("/ops/api/status", headers=gateway.ops)).status_code == 200
        await proxy.cut()
        await asyncio.sleep(0.2)

        for method, path in (
            ("GET", "/ops/api/status"),
            ("GET", "/ops/api/dead-letters"),
            ("POST", "/ops/api/dead-letters/replay"),
        ):
            response = await client.request(method, path, headers=gateway.ops, json={})
            assert response.status_code == 503, (path, response.text)
            assert error_of(response)[0] == "broker_unavailable"
            assert int(response.headers["retry-after"]) > 0


# -- the page ----------------------------------------------------------------------------------


async def test_the_page_and_its_assets_are_served_without_a_key_and_fetch_nothing_else(
    gateway: Ops,
) -> None:
    page = await gateway.client.get("/ops")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "http://" not in page.text and "https://" not in page.text
    assert 'src="/ops/static/ops.js"' in page.text
    for name, kind in (("ops.js", "text/javascript"), ("ops.css", "text/css")):
        asset = await gateway.client.get(f"/ops/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert "http://" not in asset.text and "https://" not in asset.text
    assert (await gateway.client.get("/ops/static/ops.html")).status_code == 404
    assert (await gateway.client.get("/ops/static/..%2Fauth.py")).status_code == 404


async def test_gdpr_erasure_needs_an_admin_key_and_confirm_and_takes_the_owner_s_dead_letters(
    gateway: Ops, amqp: Broker
) -> None:
    owner = f"erase-{uuid.uuid4().hex[:8]}"
    kept = received("kept.png")  # acme's
    gone = support_received(owner).model_copy(update={"source": f"spool://{uuid.uuid4()}.bin"})
    consumer = StageConsumer(Stage("scan", scan_fails), AMQP, TOPOLOGY)
    await consumer.start()
    try:
        publisher = await amqp.publisher()
        for event in (kept, gone):
            await publisher.publish(event)
        deadline = asyncio.get_running_loop().time() + 15
        while await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) < 2:
            assert asyncio.get_running_loop().time() < deadline, "dead letters did not arrive"
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()

    async def erase(body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return await gateway.client.post("/ops/api/gdpr/erasures", json=body, headers=headers)

    unconfirmed = await erase({"owner": owner}, gateway.ops)
    assert unconfirmed.status_code == 400 and error_of(unconfirmed)[0] == "confirm_required"
    for headers in (gateway.read, gateway.upload):
        assert (await erase({"owner": owner, "confirm": True}, headers)).status_code == 403
    assert (await erase({"owner": "../etc", "confirm": True}, gateway.ops)).status_code == 422
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) == 2  # nothing erased yet

    answer = await erase({"owner": owner, "confirm": True}, gateway.ops)
    assert answer.status_code == 200, answer.text
    receipt = answer.json()
    assert receipt["requested_by"] == "ops-api:night-shift"
    assert receipt["counts"]["dead_letters"] == 1 and receipt["counts"]["rows_left"] == 0
    assert await amqp.depth(TOPOLOGY.dead_letter_queue("scan")) == 1  # acme's stays
    row = await gateway.pool.fetchrow(
        "SELECT owner_sha256, requested_by, counts FROM gdpr_erasures WHERE erasure_id = $1",
        uuid.UUID(receipt["erasure_id"]),
    )
    assert row["owner_sha256"] == hashlib.sha256(owner.encode()).hexdigest()
    assert row["counts"] == receipt["counts"]
