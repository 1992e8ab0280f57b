"""The gateway as a server: uploads go on while the broker is away or cannot route the event
(the outbox keeps the events and the relay publishes them once it can; 503 past the outbox's
bound); health, readiness and the OpenAPI document; ``serve`` runs uvicorn until stopped
(with a flat peak RSS over large uploads) and fails loudly when it cannot start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from services.gateway.app import serve
from shared.errors import GatewayStartError
from shared.topology import Topology
from tests.e2e.pipeline import free_port
from tests.integration.gateway.support import (
    PREFIX,
    UNROUTABLE_PREFIX,
    Gateway,
    MakeSettings,
    MiB,
    TcpProxy,
    Who,
    error_of,
    jpeg,
    outbox_entries,
    pdf,
    png,
    running,
    spool_entries,
    tombstones,
    upload,
)

pytestmark = pytest.mark.integration


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what} within {timeout_s} s"
        await asyncio.sleep(0.1)


async def _drain(queue: AbstractQueue) -> list[str]:
    """The ``file_id`` of every ``file.received`` in ``queue`` now, in order (acked)."""
    ids: list[str] = []
    while (message := await queue.get(fail=False, timeout=2)) is not None:
        await message.ack()
        ids.append(json.loads(message.body)["file_id"])
    return ids


async def test_uploads_go_on_while_the_broker_is_away_and_reach_it_in_order_when_it_is_back(
    gateway: Gateway,  # the session's gateway has declared the topology the test queue binds to
    pool: asyncpg.Pool,
    amqp: AbstractRobustConnection,
    alice: Who,
    operator: Who,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    """The broker goes away after start: uploads are still 202, their events wait in the
    outbox, /readyz says ``degraded``; once it is back the relay publishes them, oldest first,
    each once, and the outbox empties."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(f"{PREFIX}.events", "file.received")
    proxy = TcpProxy()
    port = await proxy.start()
    settings = make_settings(tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/")
    try:
        async with running(settings) as gw:
            await proxy.cut()
            accepted = []
            for n in range(5):
                response = await upload(gw, alice[1], f"{n}.jpg", jpeg(10_000), "image/jpeg")
                assert response.status_code == 202, response.text
                accepted.append(response.json()["file_id"])
            assert len(outbox_entries(tmp_path)) == 5
            assert sorted(spool_entries(tmp_path)) == sorted(accepted)  # bytes kept
            assert tombstones(tmp_path) == []
            degraded = await gw.client.get("/readyz", headers=operator[1])
            assert degraded.status_code == 200, degraded.text
            assert degraded.json()["status"] == "degraded"
            assert degraded.json()["checks"]["broker"] != "ok"
            assert degraded.json()["checks"]["outbox"] == "ok"
            bare = await gw.client.get("/readyz")
            assert (bare.status_code, bare.json()) == (200, {"status": "degraded"})
            assert await _drain(queue) == []

            await proxy.start(port=port)  # the broker is back: the robust connection returns
            await _until(lambda: not outbox_entries(tmp_path), 30, "outbox empty")
            await asyncio.sleep(0.5)
            assert await _drain(queue) == accepted  # each once, in the order accepted
            ready = await gw.client.get("/readyz")
            assert ready.json()["status"] == "ready", ready.text
    finally:
        await channel.close()


async def test_past_its_bound_the_outbox_refuses_with_503_and_keeps_no_bytes(
    alice: Who, operator: Who, make_settings: MakeSettings, tmp_path: Path
) -> None:
    proxy = TcpProxy()
    port = await proxy.start()
    settings = make_settings(
        tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/", outbox_max_events=2
    )
    async with running(settings) as gw:
        await proxy.cut()
        codes = [
            (await upload(gw, alice[1], f"{n}.jpg", jpeg(), "image/jpeg")).status_code
            for n in range(2)
        ]
        assert codes == [202, 202]
        response = await upload(gw, alice[1], "c.jpg", jpeg(), "image/jpeg")

        assert response.status_code == 503, response.text
        assert error_of(response)[0] == "outbox_full"
        assert int(response.headers["retry-after"]) > 0
        assert len(spool_entries(tmp_path)) == 2  # only the two accepted uploads' bytes
        assert len(tombstones(tmp_path)) == 1  # the scan stage rejects it if its event got out
        assert len(outbox_entries(tmp_path)) == 2
        full = await gw.client.get("/readyz", headers=operator[1])
        assert full.status_code == 503
        assert error_of(full) == ("not_ready", "not ready: outbox")
        assert full.json()["status"] == "not_ready"
        assert full.json()["checks"]["outbox"].startswith("OutboxFull: 2 events wait")
        bare = await gw.client.get("/readyz")
        assert (bare.status_code, bare.json()) == (503, {"status": "not_ready"})


async def test_an_unroutable_event_waits_in_the_outbox_until_a_queue_takes_it(
    pool: asyncpg.Pool,
    amqp: AbstractRobustConnection,
    alice: Who,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    """Every queue bound to ``file.received`` is deleted after start: the broker returns the
    mandatory message, so the event is not taken for delivered; it waits in the outbox and is
    published as soon as the topology is declared again."""
    prefix = UNROUTABLE_PREFIX
    channel = await amqp.channel()
    try:
        async with running(make_settings(tmp_path, prefix=prefix)) as gw:
            for stage in ("scan", "commit"):
                await channel.queue_delete(f"{prefix}.{stage}")

            response = await upload(gw, alice[1], "a.jpg", jpeg(), "image/jpeg")

            assert response.status_code == 202, response.text
            assert len(outbox_entries(tmp_path)) == 1
            assert spool_entries(tmp_path) == [response.json()["file_id"]]
            await Topology(prefix=prefix).declare(channel)
            await _until(lambda: not outbox_entries(tmp_path), 30, "outbox empty")
            scan = await channel.get_queue(f"{prefix}.scan")
            message = await scan.get(timeout=5)
            assert json.loads(message.body)["file_id"] == response.json()["file_id"]
            await message.ack()
    finally:
        await Topology(prefix=prefix).delete(channel)
        await channel.close()


async def test_health_readiness_and_openapi(gw: Gateway, alice: Who, operator: Who) -> None:
    assert (await gw.client.get("/healthz")).json() == {"status": "ok"}
    ready = await gw.client.get("/readyz", headers=operator[1])
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok", "outbox": "ok"},
    }
    # Without an ops key, the status alone; a bad key is no key (probes never get a 401).
    for headers in (
        {},
        alice[1],
        {"Authorization": "Bearer slk_" + "x" * 43},
        {"Authorization": "Basic b3BzOm9wcw=="},
    ):
        bare = await gw.client.get("/readyz", headers=headers)
        assert (bare.status_code, bare.json()) == (200, {"status": "ready"}), headers
    spec = (await gw.client.get("/openapi.json")).json()
    upload_op = spec["paths"]["/v1/files"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    assert {"202", "401", "413", "415", "503"} <= set(upload_op["responses"])
    assert "/v1/files/{file_id}/content" in spec["paths"]
    unknown = await gw.client.get("/nowhere")
    assert unknown.status_code == 404 and error_of(unknown)[0] == "not_found"


def _peak_rss_bytes(reset: bool = False) -> int:
    """This process's peak resident set (VmHWM); ``reset`` restarts it from now (Linux)."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


async def _rss_growth_of_upload(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """Peak RSS growth of this process (real uvicorn + gateway) over one streamed 9.5 MiB
    upload; the client side generates the body piece by piece and keeps none of it."""
    chunk = os.urandom(64 * 1024)

    async def body() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        yield jpeg()
        for _ in range(152):  # 9.5 MiB
            yield chunk
        yield b"\r\n--b--\r\n"

    before = _peak_rss_bytes(reset=True)
    response = await client.post(
        "/v1/files",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
        content=body(),
    )
    assert response.status_code == 202, response.text
    return _peak_rss_bytes() - before


async def test_serve_runs_uvicorn_until_stopped(
    gateway: Gateway, alice: Who, make_settings: MakeSettings, tmp_path: Path
) -> None:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(make_settings(tmp_path, port=port), stop))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(100):
            with contextlib.suppress(httpx.ConnectError):
                if (await client.get("/healthz")).status_code == 200:
                    break
            assert not task.done(), task
            await asyncio.sleep(0.05)
        response = await client.post(
            "/v1/files", headers=alice[1], files={"file": ("a.png", png(), "image/png")}
        )
        assert response.status_code == 202, response.text
        assert spool_entries(tmp_path) == [response.json()["file_id"]]
        oversize = await client.post(
            "/v1/files", headers=alice[1], files={"file": ("b.pdf", pdf(6 * MiB), "")}
        )
        assert oversize.status_code == 413
        growth = [await _rss_growth_of_upload(client, alice[1]) for _ in range(2)]
        assert growth[-1] < 4 * MiB, f"peak RSS grew {growth[-1] / MiB:.1f} MiB for 9.5 MiB"
    stop.set()
    await asyncio.wait_for(task, 15)
    with pytest.raises(httpx.ConnectError):
        await httpx.AsyncClient().get(f"{base}/healthz")


async def test_serve_fails_loudly_when_it_cannot_start(
    pool: asyncpg.Pool, make_settings: MakeSettings, tmp_path: Path
) -> None:
    closed = free_port()
    settings = make_settings(tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{closed}/")
    with pytest.raises(GatewayStartError, match="cannot connect to RabbitMQ"):
        await asyncio.wait_for(serve(settings, asyncio.Event()), 30)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = make_settings(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(GatewayStartError, match="could not start"):
            await asyncio.wait_for(serve(settings, asyncio.Event()), 30)
