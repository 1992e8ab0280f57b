"""The delay from the commit stage recording an event to an event-stream client reading it,
against a raw PostgreSQL ``LISTEN`` in the same run.

Usage::

    python bench/bench_events.py [--streams 1 50 200]

The gateway runs as its own process (``python -m services gateway``) on a fresh database
(``sluice_bench_events``). For each number of open streams N, N files are recorded
(``file.received``) and followed, each by its own ``GET /v1/files/{id}/events`` client; then, four
times (scanned, stored, thumbnailed, committed), the real commit handler records the next event of
every file, one file after the other. Measured per event:

- ``raw``: until a plain asyncpg ``LISTEN`` connection in this process gets the notice (the
  baseline: what PostgreSQL's NOTIFY costs);
- ``sse``: until the stream's client has read the event (the notice, the gateway's fan-out, its
  read of ``file_events``, HTTP).

Both from the moment the commit handler is called (its transaction, about 2 ms here, is in
both). Milliseconds, p50 / p95 / max, and the ratio of the p50s. Not a test: nothing is
asserted. Needs ``sluice services up``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import psycopg
from httpx_sse import aconnect_sse

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from services.commit.handler import Deps, handle  # noqa: E402
from services.commit.repository import FileRepository  # noqa: E402
from services.gateway.keys import create_key  # noqa: E402
from shared.adapters import db  # noqa: E402
from shared.adapters.spool import LocalSpool  # noqa: E402
from shared.events import (  # noqa: E402
    BaseEvent,
    FileReceived,
    FileScanned,
    FileStored,
    FileThumbnailed,
)
from shared.history import CHANNEL  # noqa: E402
from shared.naming import object_key  # noqa: E402
from shared.settings import DatabaseSettings  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "sluice_bench_events"
BUCKET = "sluice-bench-events"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def next_events(first: FileReceived) -> list[BaseEvent]:
    scanned = first.follow(FileScanned, scanner="ClamAV", signature_version="1")
    key = object_key(first.owner, first.file_id, first.received_at, first.original_name)
    stored = scanned.follow(FileStored, bucket=BUCKET, key=key)
    return [scanned, stored, stored.follow(FileThumbnailed, bucket=BUCKET, key=key, thumbnails=())]


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"{statistics.median(ordered):6.2f} / {p95:6.2f} / {ordered[-1]:6.2f}"


async def run(streams: list[int]) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    database = DatabaseSettings(url=f"{SERVER}/{DATABASE}")
    await db.ensure_database(database)
    await asyncio.to_thread(db.migrate, database)
    pool = await db.create_pool(database)
    spool_dir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    deps = Deps(repository=FileRepository(pool), spool=LocalSpool(spool_dir), bucket=BUCKET)
    key = await create_key(pool, "bench")
    port = free_port()
    env = {
        **os.environ,
        "SLUICE_DATABASE_URL": database.url,
        "SLUICE_AMQP_PREFIX": "bench_events",
        "S3_BUCKET_NAME": BUCKET,
        "SLUICE_SPOOL_DIR": str(spool_dir),
        "SLUICE_GATEWAY_PORT": str(port),
        "SLUICE_GATEWAY_METRICS_PORT": "0",
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_STREAM_MAX_PER_OWNER": "10000",
        "SLUICE_STREAM_MAX_TOTAL": "10000",
    }
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "gateway", env=env, cwd=REPO_ROOT
    )
    raw_at: dict[tuple[uuid.UUID, int], float] = {}
    listener = await asyncpg.connect(database.url)

    def noticed(_c: object, _pid: int, _channel: str, payload: str) -> None:
        import json

        body = json.loads(payload)
        raw_at[(uuid.UUID(body["file_id"]), body["seq"])] = time.perf_counter()

    await listener.add_listener(CHANNEL, noticed)
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=httpx.Timeout(30, read=None), limits=limits
        ) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            print(
                f"{'streams':>8} {'events':>7}  raw p50 / p95 / max ms    sse p50 / p95 / max ms"
                "   p50 ratio"
            )
            for count in streams:
                await measure(client, deps, count, raw_at)
    finally:
        gateway.terminate()
        await asyncio.wait_for(gateway.wait(), 30)
        await listener.close()
        await pool.close()


async def measure(
    client: httpx.AsyncClient,
    deps: Deps,
    count: int,
    raw_at: dict[tuple[uuid.UUID, int], float],
) -> None:
    files = []
    for index in range(count):
        data = f"bench {index}".encode()
        file_id = uuid.uuid4()
        first = FileReceived.new(
            file_id=file_id,
            owner="bench",
            source=f"spool://{file_id}",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            content_type="image/jpeg",
            original_name="bench.jpg",
        )
        await handle(first, deps)
        files.append(first)
    read_at: dict[tuple[uuid.UUID, int], float] = {}
    opened = asyncio.Semaphore(0)

    async def follow(file_id: uuid.UUID) -> None:
        async with aconnect_sse(client, "GET", f"/v1/files/{file_id}/events") as source:
            first_message = True
            async for message in source.aiter_sse():
                read_at[(file_id, int(message.id))] = time.perf_counter()
                if first_message:
                    opened.release()
                    first_message = False

    followers = [asyncio.create_task(follow(f.file_id)) for f in files]
    for _ in files:
        await opened.acquire()
    committed_at: dict[tuple[uuid.UUID, int], float] = {}
    chains = [next_events(first) for first in files]
    for step in range(3):
        for first, chain in zip(files, chains, strict=True):
            started = time.perf_counter()
            committed = await handle(chain[step], deps)
            committed_at[(first.file_id, step + 2)] = started
            if committed:  # file.thumbnailed: file.committed recorded in the same transaction
                committed_at[(first.file_id, step + 3)] = started
        await asyncio.sleep(0.2)
    await asyncio.wait_for(asyncio.gather(*followers), 60)
    raw = [(raw_at[k] - t) * 1000 for k, t in committed_at.items()]
    sse = [(read_at[k] - t) * 1000 for k, t in committed_at.items()]
    ratio = statistics.median(sse) / statistics.median(raw)
    print(f"{count:>8} {len(sse):>7}  {spread(raw)}    {spread(sse)}   {ratio:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 50, 200])
    args = parser.parse_args()
    asyncio.run(run(args.streams))


if __name__ == "__main__":
    main()
