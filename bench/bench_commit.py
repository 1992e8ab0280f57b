"""The commit stage alone: CPU per file and events per second, against raw asyncpg in the same run.

Usage::

    python bench/bench_commit.py [--files 1000] [--rounds 2] [--log-level info]

It starts RabbitMQ and PostgreSQL if they are not running, publishes each file's four stage
events (``file.received``, ``file.scanned``, ``file.stored``, ``file.thumbnailed``, as the
stages make them) to a topology of its own, then starts ONE real commit worker (``sluice
worker commit``, its own OS process) and waits until every file is ``available``; it prints
the worker's wall time, events per second and CPU milliseconds per file (psutil: the
process's user + system time, its start-up included: about 1 s of imports, i.e. ~1 ms per
file at 1,000 files).

The raw baseline, measured in the same run on the same database server: one asyncpg connection
that, for each event, in one transaction, inserts the event's JSON into a table and upserts one
row per file, with the same number of events and files: the least a commit of an event must
write. The ratio worker / raw says what the stage's own work (the history lock, the ordering of
statuses, the owner checks, the broker) costs on top. Each figure is the best of ``--rounds``.
Not a test: nothing is asserted. It loads the machine: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from shared import devservices  # noqa: E402
from shared.adapters import broker  # noqa: E402
from shared.events import (  # noqa: E402
    BaseEvent,
    FileReceived,
    FileScanned,
    FileStored,
    FileThumbnailed,
    Thumbnail,
)
from shared.naming import object_key, thumbnail_key  # noqa: E402
from shared.settings import AmqpSettings  # noqa: E402
from shared.topology import Topology  # noqa: E402

DATABASE = "sluice_bench_commit"
PREFIX = "bench_commit"
BUCKET = "sluice-bench-commit"


def file_events(count: int) -> list[BaseEvent]:
    """Four stage events for each of ``count`` files, file after file."""
    events: list[BaseEvent] = []
    for n in range(count):
        data = os.urandom(64)
        received = FileReceived.new(
            file_id=uuid.uuid4(),
            owner="bench",
            source=f"s3://{BUCKET}/incoming/{n}.jpg",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            content_type="image/jpeg",
            original_name=f"photo-{n}.jpg",
            kind="photo",
            metadata={"album": "bench"},
        )
        scanned = received.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27431")
        key = object_key(
            received.owner, received.file_id, received.received_at, received.original_name
        )
        stored = scanned.follow(FileStored, bucket=BUCKET, key=key)
        thumb = Thumbnail(
            size_px=256, key=thumbnail_key(key, 256), width=256, height=171, size_bytes=1
        )
        thumbs = (thumb,)
        thumbnailed = stored.follow(FileThumbnailed, bucket=BUCKET, key=key, thumbnails=thumbs)
        events += [received, scanned, stored, thumbnailed]
    return events


def environment(database_url: str, log_level: str = "info") -> dict[str, str]:
    return {
        **os.environ,
        "SLUICE_DATABASE_URL": database_url,
        "SLUICE_AMQP_PREFIX": PREFIX,
        "S3_BUCKET_NAME": BUCKET,
        "SLUICE_LOG_LEVEL": log_level,
        "SLUICE_LOG_FORMAT": "json",
    }


async def fresh_database(server_url: str, env: dict[str, str]) -> None:
    connection = await asyncpg.connect(f"{server_url}/postgres")
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    finally:
        await connection.close()
    migrate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        "migrate",
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    if await migrate.wait() != 0:
        raise SystemExit("sluice migrate failed")


async def worker_round(files: int, server_url: str, log_level: str) -> tuple[float, float]:
    """One round of the real commit worker, logging at ``log_level`` to a temporary file:
    (wall seconds, CPU seconds)."""
    database_url = f"{server_url}/{DATABASE}"
    env = environment(database_url, log_level)
    await fresh_database(server_url, env)
    amqp = AmqpSettings(prefix=PREFIX)
    topology = Topology.of(amqp)
    connection = await broker.connect(amqp)
    channel = await connection.channel()
    await topology.delete(channel)
    await topology.declare(channel)
    publisher = await broker.Publisher.create(connection, amqp, topology)
    for event in file_events(files):
        await publisher.publish(event)
    started = time.monotonic()
    log = tempfile.TemporaryFile()  # the worker's log lines: written, as deployed, not shown
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        "worker",
        "commit",
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=log,
    )
    watched = psutil.Process(process.pid)
    database = await asyncpg.connect(database_url)
    try:
        available = "SELECT count(*) FROM files WHERE status = 'available'"
        while await database.fetchval(available) < files:
            if process.returncode is not None:
                raise SystemExit(f"the commit worker exited with {process.returncode}")
            await asyncio.sleep(0.05)
        wall = time.monotonic() - started
        cpu = watched.cpu_times()
    finally:
        await database.close()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
        await topology.delete(channel)
        await connection.close()
        log.close()
    return wall, cpu.user + cpu.system


async def raw_round(files: int, server_url: str) -> tuple[float, float]:
    """One round of the raw baseline (module docstring): (wall seconds, CPU seconds of this
    process)."""
    events = file_events(files)
    connection = await asyncpg.connect(f"{server_url}/postgres")
    try:
        await connection.execute("DROP TABLE IF EXISTS bench_raw_events, bench_raw_files")
        await connection.execute(
            "CREATE TABLE bench_raw_events (event_id uuid PRIMARY KEY, payload jsonb)"
        )
        await connection.execute(
            "CREATE TABLE bench_raw_files (file_id uuid PRIMARY KEY, status text)"
        )
        bodies = [(e.event_id, e.file_id, e.type, e.model_dump_json()) for e in events]
        cpu_before = time.process_time()
        started = time.monotonic()
        for event_id, file_id, event_type, body in bodies:
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO bench_raw_events VALUES ($1, $2::jsonb)", event_id, body
                )
                await connection.execute(
                    "INSERT INTO bench_raw_files VALUES ($1, $2) ON CONFLICT (file_id)"
                    " DO UPDATE SET status = EXCLUDED.status",
                    file_id,
                    event_type,
                )
        wall = time.monotonic() - started
        cpu = time.process_time() - cpu_before
        await connection.execute("DROP TABLE bench_raw_events, bench_raw_files")
    finally:
        await connection.close()
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the commit stage against raw asyncpg")
    parser.add_argument("--files", type=int, default=1000, help="files (four events each)")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many rounds")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="SLUICE_LOG_LEVEL of the worker (info: as deployed)",
    )
    args = parser.parse_args(argv)
    config = devservices.DevServicesConfig.from_env()
    devservices.up(config, only=("rabbitmq", "postgresql"))
    server_url = config.database_url.rsplit("/", 1)[0]
    events = 4 * args.files
    worker = [
        asyncio.run(worker_round(args.files, server_url, args.log_level))
        for _ in range(args.rounds)
    ]
    raw = [asyncio.run(raw_round(args.files, server_url)) for _ in range(args.rounds)]
    (worker_wall, worker_cpu), (raw_wall, raw_cpu) = min(worker), min(raw)
    rows = [
        ("commit worker", events / worker_wall, 1000 * worker_cpu / args.files),
        ("raw asyncpg, 2 statements per event", events / raw_wall, 1000 * raw_cpu / args.files),
    ]
    print(
        f"{args.files} files, {events} events, {os.cpu_count()} cores, "
        f"worker log level {args.log_level}"
    )
    print(f"{'':38} {'events/s':>9} {'CPU ms/file':>12}")
    for name, rate, cpu_ms in rows:
        print(f"{name:38} {rate:9.0f} {cpu_ms:12.2f}")
    print(f"ratio worker / raw, events/s: {rows[0][1] / rows[1][1]:.2f}")
    print(json.dumps({"worker": worker, "raw": raw}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
