"""``sluice status --json`` against the real RabbitMQ and its management API (prefixes
``t_status_<random>``: the management API keeps a deleted queue's rate samples for a while, so
a queue re-created under the same name would inherit the previous test's rates).

Stage consumers run in this process with their health server (``/stats``), on handlers whose
outcome the test chooses: of 10 ``file.received`` events the scan stage acks 6, refuses 3 for
good (dead-lettered) and fails 1 once (retried, then acked); of 4 ``file.scanned`` events the
store stage acks 3 and holds 1 until the end (in flight). Nothing consumes the commit queue,
which is bound to both event types, so its 14 copies wait there. The CLI runs as a subprocess
and must show exactly those numbers. The management API refreshes its statistics every 5 s, so
the test polls until they settle. Nothing is skipped: without RabbitMQ every test here fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import broker
from shared.errors import PermanentError
from shared.events import BaseEvent, FileReceived, FileScanned, utcnow
from shared.runner import StageConsumer
from shared.stage import Stage
from shared.telemetry import observers
from shared.telemetry.health import serve_health
from shared.telemetry.stagestats import StageStats
from shared.topology import Topology
from tests.e2e.pipeline import free_port
from tests.localenv import Local

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GOOD, BAD, FLAKY = 6, 3, 1
STORED, HELD = 3, 1
SETTLE_TIMEOUT_S = 40.0


@dataclass
class Pipeline:
    prefix: str
    worker_url: str


def event(kind: type[FileReceived] | type[FileScanned], name: str) -> BaseEvent:
    now = utcnow()
    fields: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "occurred_at": now,
        "file_id": uuid.uuid4(),
        "owner": "alice",
        "received_at": now,
        "source": "spool://status.bin",
        "size_bytes": 3,
        "sha256": "0" * 64,
        "content_type": "image/png",
        "original_name": name,
    }
    if kind is FileScanned:
        fields |= {"scanner": "ClamAV test", "signature_version": "1"}
    return kind(**fields)


@pytest.fixture
async def pipeline(local: Local, prefix: str) -> AsyncIterator[Pipeline]:
    """A fresh ``t_status_<random>`` topology with scan and store consumers and their
    ``/stats`` server, fed the test's messages and waited for; all deleted again afterwards."""
    amqp = local.amqp(prefix, retry_base_delay_s=0.05, retry_max_delay_s=0.1)
    topology = Topology(prefix=prefix, delivery_limit=amqp.delivery_limit)
    connection = await broker.connect(amqp)
    channel = await connection.channel()
    await topology.declare(channel)
    failed_once: set[str] = set()
    release = asyncio.Event()

    async def scan(event: BaseEvent) -> list[BaseEvent]:
        await asyncio.sleep(0.01)
        if event.original_name.startswith("bad"):
            raise PermanentError("refused on purpose")
        if event.original_name.startswith("flaky") and event.original_name not in failed_once:
            failed_once.add(event.original_name)
            raise RuntimeError("fails once on purpose")
        return []

    async def store(event: BaseEvent) -> list[BaseEvent]:
        if event.original_name.startswith("hold"):
            await release.wait()
        return []

    stats = StageStats()
    observers.observe(stats.record)
    consumers = [
        StageConsumer(Stage("scan", scan), amqp, topology),
        StageConsumer(Stage("store", store), amqp, topology),
    ]
    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(serve_health(port, consumers, stop, stats=stats))
    for consumer in consumers:
        await consumer.start()
    try:
        publisher = await broker.Publisher.create(connection, amqp, topology)
        names = (
            [f"good-{i}" for i in range(GOOD)]
            + [f"bad-{i}" for i in range(BAD)]
            + [f"flaky-{i}" for i in range(FLAKY)]
        )
        for name in names:
            await publisher.publish(event(FileReceived, name))
        for name in [f"stored-{i}" for i in range(STORED)] + [f"hold-{i}" for i in range(HELD)]:
            await publisher.publish(event(FileScanned, name))
        await wait_for(
            lambda: (
                handled(stats, "scan") == GOOD + BAD + 2 * FLAKY
                and handled(stats, "store") == STORED
            ),
            what="the consumers to handle every message",
        )
        yield Pipeline(prefix, f"http://127.0.0.1:{port}")
    finally:
        release.set()
        for consumer in consumers:
            await consumer.stop()
        stop.set()
        await server
        await topology.delete(channel)
        await connection.close()


def handled(stats: StageStats, stage: str) -> int:
    stages = stats.snapshot()["stages"]
    assert isinstance(stages, dict)
    return int(stages.get(stage, {}).get("handled", 0))


async def wait_for(condition: Any, *, what: str, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def sluice_status(prefix: str, **env: str) -> dict[str, Any]:
    """``sluice status --json`` for ``prefix`` as a subprocess; its exit code must be 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "status", "--json",
        cwd=ROOT,
        env={**os.environ, "SLUICE_AMQP_PREFIX": prefix, "SLUICE_LOG_LEVEL": "warning", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    body = json.loads(out)
    assert isinstance(body, dict)
    return body


def rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["stage"]: row for row in body["stages"]}


RECEIVED = GOOD + BAD + FLAKY
SCANNED = STORED + HELD
QUEUE_SIDE = {  # stage → (ready, in flight, consumers, retrying, dead letters)
    "scan": (0, 0, 1, 0, BAD),
    "store": (0, HELD, 1, 0, 0),
    "thumbnail": (0, 0, 0, 0, 0),
    # every event, and the file.dead_lettered of each dead letter of scan
    "commit": (RECEIVED + SCANNED + BAD, 0, 0, 0, 0),
    "fallback": (0, 0, 0, 0, None),
}


#: stage → (messages published into its queue, messages acked from it) in the last minute. The
#: flaky message's retry comes back from the wait queue by dead-lettering, not publishing, but
#: is acked twice (once sent to the wait queue, once handled).
RATE_COUNTS = {
    "scan": (RECEIVED, RECEIVED + FLAKY),
    "store": (SCANNED, STORED),
    "thumbnail": (0, 0),
    "commit": (RECEIVED + SCANNED + BAD, 0),
    "fallback": (0, 0),
}


def queue_side(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ("ready", "in_flight", "consumers", "retrying", "dead_letters"))


def rates(row: dict[str, Any]) -> tuple[float, float]:
    """The row's rates as message counts over the API's 60 s (``avg_rate`` x 60)."""
    return round(row["rate_in_per_s"] * 60), round(row["rate_out_per_s"] * 60)


async def settled_status(prefix: str, **env: str) -> dict[str, Any]:
    """Poll ``sluice status --json`` until the queue numbers and rates are the expected ones
    (the management API's statistics lag by up to 5 s); the last answer either way."""
    deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT_S
    while True:
        body = await sluice_status(prefix, **env)
        by_stage = rows(body)
        settled = all(queue_side(by_stage[s]) == want for s, want in QUEUE_SIDE.items())
        if settled and all(rates(by_stage[s]) == want for s, want in RATE_COUNTS.items()):
            return body
        if asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(1.0)


async def test_status_shows_the_numbers_of_a_known_run(pipeline: Pipeline) -> None:
    body = await settled_status(
        pipeline.prefix, SLUICE_STATUS_WORKER_URLS=json.dumps([pipeline.worker_url])
    )
    by_stage = rows(body)

    assert list(by_stage) == [
        "ingress",
        "scan",
        "store",
        "thumbnail",
        "commit",
        "purge",
        "fallback",
        "pdftext",  # the optional transforms: their queues exist, nothing binds them
        "ocr",
        "video",
        "mirror",  # the optional mirror: its queues exist, only the mirror binds them
    ]
    assert {s: queue_side(by_stage[s]) for s in QUEUE_SIDE} == QUEUE_SIDE
    assert by_stage["commit"]["queue"] == f"{pipeline.prefix}.commit"
    scan, store = by_stage["scan"], by_stage["store"]
    counts = ("handled", "acked", "retried", "dead_lettered")
    assert [scan[k] for k in counts] == [GOOD + BAD + 2 * FLAKY, GOOD + FLAKY, FLAKY, BAD]
    assert [store[k] for k in counts] == [STORED, STORED, 0, 0]
    assert by_stage["thumbnail"]["handled"] is None  # no worker runs it
    # Handling times: the scan handler sleeps 10 ms, so its percentiles are at least that.
    assert 10.0 <= scan["p50_ms"] <= scan["p95_ms"] < 5000
    assert 0 <= store["p50_ms"] <= store["p95_ms"] < 5000
    # Rates are averaged over the last minute, and every message arrived within it.
    assert {s: rates(by_stage[s]) for s in RATE_COUNTS} == RATE_COUNTS
    assert scan["rate_in_per_s"] == pytest.approx(RECEIVED / 60, abs=0.001)
    assert body["window_s"] == 60
    waiting = QUEUE_SIDE["commit"][0]
    assert body["problems"] == [f"commit: {waiting} message(s) wait and no consumer runs"]


async def test_unreachable_sources_are_problems_not_failures(pipeline: Pipeline) -> None:
    dead_port = free_port()
    body = await sluice_status(
        pipeline.prefix,
        SLUICE_STATUS_MANAGEMENT_URL=f"http://127.0.0.1:{dead_port}",
        SLUICE_STATUS_WORKER_URLS=json.dumps(
            [pipeline.worker_url, f"http://127.0.0.1:{dead_port}"]
        ),
    )
    by_stage = rows(body)

    dead = f"http://127.0.0.1:{dead_port}"
    problems = body["problems"]
    assert any(p.startswith(f"RabbitMQ management API at {dead} unreachable") for p in problems)
    assert any(p.startswith(f"worker {dead} unreachable") for p in problems), problems
    # AMQP passive declares still give depths and consumers; in flight comes from the worker.
    assert {s: queue_side(by_stage[s]) for s in QUEUE_SIDE} == {
        **QUEUE_SIDE,
        "thumbnail": (0, None, 0, 0, 0),
        "commit": (QUEUE_SIDE["commit"][0], None, 0, 0, 0),
        "fallback": (0, None, 0, 0, None),
    }
    assert by_stage["scan"]["rate_in_per_s"] is None
    assert by_stage["scan"]["handled"] == GOOD + BAD + 2 * FLAKY


def handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler of its own (``SigCgt`` in
    ``/proc/PID/status``, Linux): ``sluice status --watch`` installs it, with SIGINT's, when its
    refresh loop starts."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


async def test_watch_redraws_until_interrupted(pipeline: Pipeline) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "status", "--watch", "--interval", "1",
        cwd=ROOT,
        env={
            **os.environ,
            "SLUICE_AMQP_PREFIX": pipeline.prefix,
            "SLUICE_LOG_LEVEL": "warning",
            "SLUICE_STATUS_WORKER_URLS": json.dumps([pipeline.worker_url]),
            "COLUMNS": "200",
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    # Not a fixed time from the start: on a loaded machine the command may take seconds to
    # start, and a SIGINT that comes before it handles signals is lost. Wait until it does,
    # then let it redraw twice (--interval 1) before interrupting it.
    deadline = asyncio.get_running_loop().time() + 60
    while not handles_sigterm(process.pid):
        assert process.returncode is None, "--watch returned by itself"
        assert asyncio.get_running_loop().time() < deadline, "--watch never started its loop"
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)
    assert process.returncode is None, "--watch returned by itself"
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), timeout=10)

    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert "Sluice pipeline at" in text
    table = {
        cells[1]: cells[2:]
        for line in text.splitlines()
        if len(cells := [cell.strip() for cell in line.split("│")]) > 10
    }
    assert [table[s][0] for s in QUEUE_SIDE] == [f"{pipeline.prefix}.{s}" for s in QUEUE_SIDE]
    # The handled column comes from /stats, which does not lag like the management API.
    assert table["scan"][8] == str(GOOD + BAD + 2 * FLAKY), table["scan"]
