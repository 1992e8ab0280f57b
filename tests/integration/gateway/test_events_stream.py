"""``GET /v1/files/{id}/events`` served by real uvicorn, on the real PostgreSQL and RabbitMQ: the
events the real commit handler records (``services.commit``, through its repository and its
``NOTIFY``) arrive as Server-Sent Events, in order, and the stream ends after
``file.committed``; another owner gets 404; ``Last-Event-ID`` resumes without gaps or repeats; a
client that subscribes before ``file.received`` is recorded is served; the stream limits answer
429 and 503."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractQueue
from httpx_sse import aconnect_sse
from prometheus_client import REGISTRY

from services.commit.handler import Deps, handle
from services.commit.repository import FileRepository
from shared.adapters.spool import LocalSpool
from shared.events import FileReceived, FileScanned, FileStored, FileThumbnailed, parse_event
from shared.naming import object_key
from shared.settings import StreamSettings
from tests.e2e.pipeline import free_port
from tests.integration.gateway.support import (
    BUCKET,
    MakeSettings,
    Who,
    error_of,
    jpeg,
    next_event,
    serving,
)

pytestmark = pytest.mark.integration
STAGES = ["file.received", "file.scanned", "file.stored", "file.thumbnailed", "file.committed"]
WAIT_S = 1.0


class Sse:
    """The gateway served by real uvicorn, and the commit stage's handler on its database."""

    def __init__(self, url: str, deps: Deps, spool: LocalSpool) -> None:
        self.url = url
        self.deps = deps
        self.spool = spool

    def client(self, headers: dict[str, str]) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def upload(self, headers: dict[str, str], received: AbstractQueue) -> FileReceived:
        """Upload a JPEG and take its ``file.received`` off the test queue (not recorded yet)."""
        await received.purge()  # what other modules' uploads left there
        async with self.client(headers) as client:
            answer = await client.post("/v1/files", files={"file": ("cat.jpg", jpeg(), "")})
        assert answer.status_code == 202, answer.text
        event = parse_event((await next_event(received)).body)
        assert isinstance(event, FileReceived)
        assert str(event.file_id) == answer.json()["file_id"]
        return event

    async def commit(self, *events: Any) -> None:
        for event in events:
            await handle(event, self.deps)


def chain(first: FileReceived) -> list[Any]:
    """The events the stages would emit for ``first``: scanned, stored, thumbnailed."""
    scanned = first.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27431")
    key = object_key(
        first.owner, first.file_id, first.received_at, first.original_name, first.version_number
    )
    stored = scanned.follow(FileStored, bucket=BUCKET, key=key)
    done = stored.follow(FileThumbnailed, bucket=BUCKET, key=key, thumbnails=())
    return [scanned, stored, done]


@pytest.fixture(scope="module")
async def sse(
    make_settings: MakeSettings,
    pool: asyncpg.Pool,
    received: AbstractQueue,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Sse]:
    spool_dir = tmp_path_factory.mktemp("sse-spool")
    settings = make_settings(spool_dir, port=free_port())
    # Keep-alives (and the re-read that follows each) 30 s apart: within a test every event
    # reaches the stream through the commit stage's NOTIFY.
    settings.stream = StreamSettings(
        first_event_wait_s=WAIT_S, keepalive_s=30, max_per_owner=2, max_total=3
    )
    async with serving(settings) as url:
        deps = Deps(repository=FileRepository(pool), spool=LocalSpool(spool_dir), bucket=BUCKET)
        yield Sse(url, deps, LocalSpool(spool_dir))


async def read_stream(
    client: httpx.AsyncClient,
    file_id: Any,
    last_event_id: str | None = None,
    limit: int = 99,
    version: int | None = None,
) -> tuple[list[tuple[str, str, dict[str, Any]]], bool]:
    """``([(id, event, data), …], ended)``: messages until the server ends the stream (``ended``)
    or ``limit`` messages were read."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    url = f"/v1/files/{file_id}/events" + (f"?version={version}" if version else "")
    messages: list[tuple[str, str, dict[str, Any]]] = []
    async with aconnect_sse(client, "GET", url, headers=headers) as src:
        assert src.response.status_code == 200, await src.response.aread()
        assert src.response.headers["content-type"].startswith("text/event-stream")
        async for message in src.aiter_sse():
            messages.append((message.id, message.event, json.loads(message.data)))
            if len(messages) == limit:
                return messages, False
    return messages, True


async def test_a_stream_opened_at_once_delivers_every_stage_in_order_then_ends(
    sse: Sse, received: AbstractQueue, alice: Who
) -> None:
    _, headers = alice
    first = await sse.upload(headers, received)
    async with sse.client(headers) as client:
        # Subscribed right after the 202, before file.received is recorded: the stream waits.
        reading = asyncio.create_task(read_stream(client, first.file_id))
        await asyncio.sleep(0.3)
        for event in [first, *chain(first)]:
            await sse.commit(event)
            await asyncio.sleep(0.05)
        messages, ended = await asyncio.wait_for(reading, 10)

    assert ended, "the stream did not end after file.committed"
    assert [event for _, event, _ in messages] == STAGES
    assert [id_ for id_, _, _ in messages] == ["1", "2", "3", "4", "5"]
    assert [data["type"] for _, _, data in messages] == STAGES
    assert messages[1][2]["detail"] == "ClamAV 1.0.9 / 27431"
    assert messages[-1][2]["detail"] == "committed: available"
    assert set(messages[0][2]) == {"type", "version_number", "occurred_at", "recorded_at", "detail"}


async def test_another_owner_and_an_unknown_id_get_the_same_404(
    sse: Sse, received: AbstractQueue, alice: Who, bob: Who
) -> None:
    first = await sse.upload(alice[1], received)
    await sse.commit(first)
    timings = []
    for headers, file_id in (
        (bob[1], first.file_id),
        (alice[1], "7d0c1e9e-0000-4000-8000-0000000000aa"),
    ):
        async with sse.client(headers) as client:
            started = time.monotonic()
            answer = await client.get(f"/v1/files/{file_id}/events")
            timings.append(time.monotonic() - started)
        assert answer.status_code == 404
        assert error_of(answer)[0] == "not_found"
    assert all(t >= WAIT_S * 0.9 for t in timings), timings


async def test_last_event_id_resumes_without_a_gap_or_a_repeat(
    sse: Sse, received: AbstractQueue, alice: Who
) -> None:
    _, headers = alice
    first = await sse.upload(headers, received)
    scanned, stored, done = chain(first)
    await sse.commit(first, scanned)
    async with sse.client(headers) as client:
        part1, ended = await read_stream(client, first.file_id, limit=2)
        assert not ended and [e for _, e, _ in part1] == STAGES[:2]
        await sse.commit(stored)  # recorded while the client is away
        resuming = asyncio.create_task(read_stream(client, first.file_id, part1[-1][0]))
        await asyncio.sleep(0.2)
        await sse.commit(done)
        part2, ended = await asyncio.wait_for(resuming, 10)
        again, ended_again = await read_stream(client, first.file_id, part2[-1][0])

    assert ended and ended_again
    ids = [int(i) for i, _, _ in part1 + part2]
    assert ids == [1, 2, 3, 4, 5], ids
    assert [e for _, e, _ in part1 + part2] == STAGES
    assert again == [], "a stream resumed after its end sends nothing and ends"


async def test_a_versions_stream_sends_that_versions_events_until_its_own_commit(
    sse: Sse, received: AbstractQueue, alice: Who
) -> None:
    """``?version=2``: version 1's events (already recorded, its ``file.committed`` among them)
    are skipped, and the stream ends after version 2's own ``file.committed``; without the
    parameter, the file's stream ends after version 1's."""
    _, headers = alice
    first = await sse.upload(headers, received)
    await sse.commit(first, *chain(first))
    second = first.model_copy(
        update={"event_id": uuid.uuid4(), "version_number": 2, "causation_id": None}
    )
    scanned, stored, done = chain(second)
    await sse.commit(second, scanned)
    async with sse.client(headers) as client:
        url = f"/v1/files/{first.file_id}/events"
        reading = asyncio.create_task(read_stream(client, first.file_id, version=2))
        await asyncio.sleep(0.2)
        await sse.commit(stored, done)
        messages, ended = await asyncio.wait_for(reading, 10)
        whole, whole_ended = await read_stream(client, first.file_id)
        resumed, resumed_ended = await read_stream(client, first.file_id, messages[1][0], version=2)
        after_end, _ = await read_stream(client, first.file_id, messages[-1][0], version=2)
        bad = await client.get(url, params={"version": "0"})

    assert ended and [e for _, e, _ in messages] == STAGES
    assert {data["version_number"] for _, _, data in messages} == {2}
    assert [int(i) for i, _, _ in messages] == [6, 7, 8, 9, 10]  # the file's own numbers
    assert whole_ended and [int(i) for i, _, _ in whole] == [1, 2, 3, 4, 5]  # version 1's
    assert resumed_ended and [e for _, e, _ in resumed] == STAGES[2:]
    assert after_end == []
    assert bad.status_code == 422


async def test_a_malformed_last_event_id_is_refused(sse: Sse, alice: Who) -> None:
    async with sse.client(alice[1]) as client:
        answer = await client.get(
            "/v1/files/7d0c1e9e-0000-4000-8000-0000000000ab/events",
            headers={"Last-Event-ID": "abc"},
        )
    assert answer.status_code == 422
    assert error_of(answer) == (
        "invalid_request",
        "Last-Event-ID: 'abc' is not an event id of this stream (a whole number)",
    )


async def test_past_the_limits_streams_are_refused_429_then_503(
    sse: Sse, received: AbstractQueue, alice: Who, bob: Who, tmp_path: Path
) -> None:
    files = [await sse.upload(alice[1], received) for _ in range(2)]
    await sse.commit(*files)
    async with sse.client(alice[1]) as a, sse.client(bob[1]) as b:
        opened = []
        for file in files:  # alice's two (SLUICE_STREAM_MAX_PER_OWNER=2)
            request = a.build_request("GET", f"/v1/files/{file.file_id}/events")
            opened.append(await a.send(request, stream=True))
        assert [r.status_code for r in opened] == [200, 200]
        third = await a.get(f"/v1/files/{files[0].file_id}/events")
        assert third.status_code == 429 and third.headers["Retry-After"]
        assert error_of(third)[0] == "too_many_streams"
        bobs_file = await sse.upload(bob[1], received)
        await sse.commit(bobs_file)
        request = b.build_request("GET", f"/v1/files/{bobs_file.file_id}/events")
        opened.append(await b.send(request, stream=True))
        assert opened[-1].status_code == 200
        full = await b.get(f"/v1/files/{bobs_file.file_id}/events")  # 3 open: the total
        assert full.status_code == 503 and error_of(full)[0] == "too_many_streams"
        assert REGISTRY.get_sample_value("sluice_event_streams") == 3
        for limit in ("owner", "total"):
            sample = "sluice_event_streams_refused_total"
            assert (REGISTRY.get_sample_value(sample, {"limit": limit}) or 0) >= 1
        for response in opened:
            await response.aclose()
        await asyncio.sleep(0.3)  # the server sees the disconnects and gives the slots back
        assert REGISTRY.get_sample_value("sluice_event_streams") == 0
        again = b.build_request("GET", f"/v1/files/{bobs_file.file_id}/events")
        reopened = await b.send(again, stream=True)
        assert reopened.status_code == 200
        await reopened.aclose()


async def test_a_quiet_stream_sends_keep_alives_and_ends_at_once_when_the_gateway_stops(
    sse: Sse, make_settings: MakeSettings, received: AbstractQueue, alice: Who, tmp_path: Path
) -> None:
    first = await sse.upload(alice[1], received)
    await sse.commit(first)
    settings = make_settings(tmp_path, port=free_port())
    settings.stream = StreamSettings(keepalive_s=0.3)
    async with httpx.AsyncClient(headers=alice[1], timeout=30) as client:
        async with serving(settings) as url:
            request = client.build_request("GET", f"{url}/v1/files/{first.file_id}/events")
            response = await client.send(request, stream=True)
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert await anext(lines) == "event: file.received"
            quiet = [await anext(lines) for _ in range(5)]  # data, id, blank, then 0.3 s later
            assert quiet[2:] == ["", ": ping", ""], quiet
            stopping = time.monotonic()
        # serving() has stopped the gateway and awaited its end: the open stream did not hold
        # it for the graceful-shutdown timeout (SLUICE_AMQP_SHUTDOWN_TIMEOUT_S, 30 s) ...
        assert time.monotonic() - stopping < 5
        # ... and it ended cleanly, after the message it had begun.
        rest = [line async for line in lines]
        assert "event: file.scanned" not in rest
        await response.aclose()
