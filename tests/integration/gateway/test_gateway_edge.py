"""The gateway's HTTP edge, served by real uvicorn (``serve``): ``/metrics`` on its own port and
not on the public one."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.app import serve
from shared.errors import GatewayStartError
from tests.e2e.pipeline import free_port
from tests.integration.gateway.support import Gateway, MakeSettings, Who, jpeg, serving

pytestmark = pytest.mark.integration


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_are_served_on_their_own_port_and_not_on_the_public_one(
    gateway: Gateway, alice: Who, make_settings: MakeSettings, tmp_path: Path
) -> None:
    metrics_port = free_port()
    settings = make_settings(tmp_path, port=free_port(), metrics_port=metrics_port)
    async with serving(settings) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await client.post(
            "/v1/files", headers=alice[1], files={"file": ("a.jpg", jpeg(), "image/jpeg")}
        )
        assert answer.status_code == 202, answer.text
        public = await client.get("/metrics")
        assert public.status_code == 404, public.text
        scraped = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=")
        samples = _samples(scraped.text)
        assert samples[("sluice_uploads_total", frozenset({("outcome", "accepted")}))] >= 1
        upload = {("handler", "/v1/files"), ("method", "POST"), ("status", "2xx")}
        assert samples[("http_requests_total", frozenset(upload))] >= 1
    with pytest.raises(httpx.ConnectError):
        await httpx.AsyncClient().get(f"http://127.0.0.1:{metrics_port}/metrics")


async def test_a_taken_metrics_port_stops_the_gateway_at_start(
    gateway: Gateway, make_settings: MakeSettings, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(tmp_path, port=free_port(), metrics_port=port)
        with pytest.raises(GatewayStartError, match=f"metrics could not start on 127.0.0.1:{port}"):
            await asyncio.wait_for(serve(settings, asyncio.Event()), 30)
