"""The gateway's HTTP edge, served by real uvicorn (``serve``): ``/metrics`` on its own port and
not on the public one; clients that send their headers or body too slowly are cut off (raw
sockets, a byte at a time) while a normal upload goes through; idle connections are closed;
past ``limit_concurrency`` a request is 503; past its cap of uploads in progress an owner's
next upload is 429 before its body is read, and a slot comes back when an upload ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.app import serve
from shared.errors import GatewayStartError
from tests.e2e.pipeline import free_port
from tests.integration.gateway.support import (
    Gateway,
    MakeSettings,
    Who,
    jpeg,
    multipart,
    serving,
    spool_entries,
)

pytestmark = pytest.mark.security


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


#: Short timeouts, so that the tests wait seconds, not the defaults' tens of seconds.
EDGE = {"header_timeout_s": 1.0, "body_read_timeout_s": 1.0, "keep_alive_timeout_s": 1}


@dataclass
class Cut:
    """What a raw client got before the server closed the connection, and when."""

    answer: bytes
    held_s: float  # from connecting to the server's close

    @property
    def status(self) -> int:
        return int(self.answer.split(b" ", 2)[1]) if self.answer else 0

    def json(self) -> dict[str, object]:
        body: dict[str, object] = json.loads(self.answer.partition(b"\r\n\r\n")[2])
        return body


async def trickle(
    port: int, head: bytes, rest: bytes, every_s: float, give_up_s: float = 20.0
) -> Cut:
    """Connect, send ``head`` at once and then ``rest`` a byte every ``every_s``, reading all
    the while, until the server closes the connection. Fails if it is still open after
    ``give_up_s``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
            for byte in rest:
                await asyncio.sleep(every_s)
                writer.write(bytes([byte]))
                await writer.drain()

    async def read_to_end() -> bytes:
        answer = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                answer += chunk
        return answer

    sending = asyncio.create_task(send())
    try:
        answer = await asyncio.wait_for(read_to_end(), give_up_s)
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {give_up_s} s") from None
    finally:
        sending.cancel()
        writer.close()
    return Cut(answer, time.monotonic() - started)


def _request_head(headers: dict[str, str], length: int) -> bytes:
    lines = [
        "POST /v1/files HTTP/1.1",
        "Host: gateway",
        f"Content-Length: {length}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _timeouts() -> float:
    return REGISTRY.get_sample_value("sluice_uploads_total", {"outcome": "request_timeout"}) or 0


async def test_slow_clients_are_cut_off_while_a_normal_upload_is_accepted(
    gateway: Gateway, alice: Who, make_settings: MakeSettings, tmp_path: Path
) -> None:
    """Twenty slow loris clients: ten send their headers a byte every 0.3 s (the deadline is
    on the whole headers, not between bytes), ten send whole headers and then their body a byte
    every 1.5 s. Each is cut off about a second in; the upload sent meanwhile gets its 202."""
    settings = make_settings(
        tmp_path, port=free_port(), max_concurrent_uploads_per_owner=32, **EDGE
    )
    data = jpeg(20_000)  # past the sniffed head: a spool file is open when the body stalls
    body, form = multipart([(b"file", b"slow.jpg", b"image/jpeg", data)])
    head = _request_head({**alice[1], **form}, len(body))
    timeouts_before = _timeouts()
    async with serving(settings) as base, httpx.AsyncClient(base_url=base) as client:
        port = settings.gateway.port
        headers_slow = [trickle(port, b"", head, every_s=0.3) for _ in range(10)]
        body_slow = [trickle(port, head + body[:12_000], body[12_000:], 1.5) for _ in range(10)]
        slow = asyncio.gather(*headers_slow, *body_slow)
        await asyncio.sleep(0.3)  # every slow client is connected
        started = time.monotonic()
        normal = await client.post(
            "/v1/files", headers=alice[1], files={"file": ("ok.jpg", jpeg(), "image/jpeg")}
        )
        normal_s = time.monotonic() - started
        cuts = await slow

    assert normal.status_code == 202, normal.text
    assert normal_s < 1.0, f"the normal upload took {normal_s:.2f} s"
    for cut in cuts[:10]:  # headers: 408 and closed at the deadline, not before
        assert cut.status == 408, cut.answer
        assert 0.9 <= cut.held_s < 4.0, cut.held_s
    for cut in cuts[10:]:  # body: 408 request_timeout, closed
        assert cut.status == 408, cut.answer
        assert b"\r\nconnection: close\r\n" in cut.answer.lower()
        assert cut.json()["error"] == {
            "code": "request_timeout",
            "message": "no request body received for 1 s",
        }
        assert 0.9 <= cut.held_s < 4.0, cut.held_s
    assert _timeouts() - timeouts_before == 10  # sluice_uploads_total{outcome="request_timeout"}
    assert spool_entries(tmp_path) == [normal.json()["file_id"]]  # no partial file left
    print(
        f"slow clients held {min(c.held_s for c in cuts):.2f}-{max(c.held_s for c in cuts):.2f} s;"
        f" normal upload {normal_s * 1000:.0f} ms"
    )


async def test_a_refused_body_closes_the_connection_at_once(
    gateway: Gateway, make_settings: MakeSettings, tmp_path: Path
) -> None:
    """No key: 401 as soon as the headers are in, and the connection closed, however slowly
    the client goes on sending the body it announced."""
    settings = make_settings(tmp_path, port=free_port(), **EDGE)
    head = _request_head({"Content-Type": "multipart/form-data; boundary=b"}, 10_000)
    async with serving(settings):
        cut = await trickle(settings.gateway.port, head, b"x" * 100, every_s=0.5)
    assert cut.status == 401, cut.answer
    assert b"\r\nconnection: close\r\n" in cut.answer.lower()
    assert cut.held_s < 0.5, cut.held_s


async def test_a_refused_small_body_is_read_away_so_its_answer_arrives_whole(
    gateway: Gateway, make_settings: MakeSettings, tmp_path: Path
) -> None:
    """The client sends its whole 256 KiB body after the server has answered 401: the server
    reads it away before closing (the lingering close), so the client's socket is not reset
    and the answer can be read after the body was sent."""
    settings = make_settings(tmp_path, port=free_port(), **EDGE)
    body = b"x" * (256 * 1024)
    head = _request_head({"Content-Type": "multipart/form-data; boundary=b"}, len(body))
    async with serving(settings):
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.gateway.port)
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(0.1)  # answered by now, before any byte of the body
        for start in range(0, len(body), 16 * 1024):
            writer.write(body[start : start + 16 * 1024])
            await writer.drain()
        await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]
    assert b'"code":"unauthorized"' in answer, answer


async def test_idle_connections_are_closed_and_past_the_limit_requests_are_503(
    gateway: Gateway, make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, port=free_port(), limit_concurrency=4, **EDGE)
    port = settings.gateway.port
    probe = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    async with serving(settings) as base, httpx.AsyncClient(base_url=base) as client:
        # A keep-alive connection after its answer, and connections that send nothing: closed
        # by the keep-alive timeout and the header deadline (silently: no request, no answer).
        keeping = asyncio.create_task(trickle(port, probe, b"", 0))
        await asyncio.sleep(0.2)  # answered, and kept open
        silent_ones = asyncio.gather(*(trickle(port, b"", b"", 0) for _ in range(3)))
        await asyncio.sleep(0.2)
        refused = await client.get("/healthz")  # four connections open: the limit
        kept_alive, silent = await keeping, await silent_ones
        answered = await client.get("/healthz")

    assert refused.status_code == 503 and refused.text == "Service Unavailable"
    assert answered.status_code == 200
    assert kept_alive.status == 200 and 0.9 <= kept_alive.held_s < 4.0, kept_alive
    for cut in silent:
        assert cut.answer == b"" and 0.9 <= cut.held_s < 4.0, cut


def _refusals(code: str) -> float:
    return REGISTRY.get_sample_value("sluice_uploads_total", {"outcome": code}) or 0


async def test_past_its_cap_an_owners_upload_is_429_until_one_of_its_uploads_ends(
    gateway: Gateway, alice: Who, bob: Who, make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, port=free_port(), max_concurrent_uploads_per_owner=2, body_read_timeout_s=30
    )
    port = settings.gateway.port
    body, form = multipart([(b"file", b"a.jpg", b"image/jpeg", jpeg(20_000))])
    head = _request_head({**alice[1], **form}, len(body))
    refused_before = _refusals("too_many_uploads")
    async with serving(settings) as base, httpx.AsyncClient(base_url=base) as client:

        async def upload(who: Who) -> httpx.Response:
            files = {"file": ("b.jpg", jpeg(), "image/jpeg")}
            return await client.post("/v1/files", headers=who[1], files=files)

        stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _, writer in stalled:  # two uploads of alice in progress, waiting for their body
            writer.write(head + body[:12_000])
            await writer.drain()
        await asyncio.sleep(0.3)

        # Refused from the headers alone: the answer comes though no byte of the body was sent.
        third = await trickle(port, head, b"", 0)
        assert third.status == 429, third.answer
        assert third.json()["error"]["code"] == "too_many_uploads"
        assert b"\r\nretry-after: 5\r\n" in third.answer.lower()
        assert third.held_s < 1.0
        assert (await upload(bob)).status_code == 202  # another owner is not held back

        _, writer = stalled.pop()
        writer.close()  # a client that goes away gives its slot back
        for _ in range(50):
            if (accepted := await upload(alice)).status_code != 429:
                break
            await asyncio.sleep(0.05)
        assert accepted.status_code == 202, accepted.text
        for _, writer in stalled:
            writer.close()

    assert _refusals("too_many_uploads") - refused_before >= 1
