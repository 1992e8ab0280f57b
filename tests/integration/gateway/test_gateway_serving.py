"""The gateway as a server: a broker that goes away or cannot route the event is a 503, never
a silent 202; health, readiness and the OpenAPI document; ``serve`` runs uvicorn until stopped
(with a flat peak RSS over large uploads) and fails loudly when it cannot start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from services.gateway.app import serve
from shared.errors import GatewayStartError
from shared.topology import Topology
from tests.e2e.pipeline import free_port
from tests.integration.gateway.support import (
    UNROUTABLE_PREFIX,
    Gateway,
    MakeSettings,
    MiB,
    TcpProxy,
    Who,
    error_of,
    jpeg,
    pdf,
    png,
    running,
    spool_entries,
    tombstones,
    upload,
)

pytestmark = pytest.mark.integration


async def test_broker_down_after_start_is_503_and_the_spool_is_emptied(
    pool: asyncpg.Pool, alice: Who, make_settings: MakeSettings, tmp_path: Path
) -> None:
    proxy = TcpProxy()
    port = await proxy.start()
    settings = make_settings(tmp_path, amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/")
    async with running(settings) as gw:
        ready = await gw.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        await proxy.cut()

        response = await upload(gw, alice[1], "a.jpg", jpeg(100_000), "image/jpeg")

        assert response.status_code == 503, response.text
        assert error_of(response)[0] == "broker_unavailable"
        assert int(response.headers["retry-after"]) > 0
        assert spool_entries(tmp_path) == []
        assert len(tombstones(tmp_path)) == 1  # the scan stage rejects it if the event got out
        not_ready = await gw.client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["broker"] != "ok"
        assert error_of(not_ready) == ("not_ready", "not ready: broker")


async def test_an_unroutable_event_is_503_not_a_silent_202(
    pool: asyncpg.Pool,
    amqp: AbstractRobustConnection,
    alice: Who,
    make_settings: MakeSettings,
    tmp_path: Path,
) -> None:
    """Every queue bound to ``file.received`` is deleted after start: the broker returns the
    mandatory message, the publish fails, and the client must not be told it was accepted."""
    prefix = UNROUTABLE_PREFIX
    channel = await amqp.channel()
    try:
        async with running(make_settings(tmp_path, prefix=prefix)) as gw:
            for stage in ("scan", "commit"):
                await channel.queue_delete(f"{prefix}.{stage}")

            response = await upload(gw, alice[1], "a.jpg", jpeg(), "image/jpeg")

            assert response.status_code == 503, response.text
            assert error_of(response)[0] == "broker_unavailable"
            assert spool_entries(tmp_path) == []
            assert len(tombstones(tmp_path)) == 1
    finally:
        await Topology(prefix=prefix).delete(channel)
        await channel.close()


async def test_health_readiness_and_openapi(gw: Gateway) -> None:
    assert (await gw.client.get("/healthz")).json() == {"status": "ok"}
    ready = await gw.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }
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
