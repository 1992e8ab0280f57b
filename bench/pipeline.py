"""The whole pipeline on this machine, against the raw rate of each stage's own work, measured
in the same run.

Usage::

    python bench/pipeline.py [--files 200] [--concurrency 8] [--rate 0] [--workers-per-stage 1 2]
                             [--camera-share 0.5] [--camera-sizes 4032x3024 ...]
                             [--raw-seconds 5] [--timeout 900] [--log-level info]

It starts the real services (``shared.devservices``), then, for each number K of workers per
stage: a fresh database ``sluice_bench`` (migrated), AMQP prefix ``bench``, bucket
``sluice-bench`` and spool; the gateway, K processes of each stage (scan, store, thumbnail,
commit) and one fallback worker, as separate processes (``python -m services ...``). It
uploads the corpus over HTTP, ``--concurrency`` at a time (and at most ``--rate`` per second,
to measure latencies below capacity), waits until every file is final,
stops the processes, and prints:

- files/s and MB/s end to end (first upload sent to last file final);
- the 202's latency p50/p99, of every upload and of those up to 256 KiB; received ->
  ``file.stored`` (or ``file.rejected``) recorded and received -> ``file.committed`` recorded
  (thumbnails included) p50/p99, from the database's timestamps;
- CPU seconds per file of each Sluice process kind (summed over its K processes, from the
  moment every worker was ready) and of the shared services (clamd, SeaweedFS, RabbitMQ,
  PostgreSQL: their processes alive at both ends; approximate);
- the raw rates of each stage's own work on the same corpus, one thread, in this process:
  a Pillow 256 px WebP thumbnail (open, ``thumbnail`` without draft, save at quality 80),
  ``render_thumbnails`` (what the thumbnail stage runs), an S3 PUT (botocore), a clamd
  INSTREAM scan (pyclamd); and the end-to-end rate's ratio to each.

The corpus: the repository's samples (``samples/``), plus camera-size JPEGs made at run time
(by default 4032x3024, 3264x2448 and 1920x1080 photographs of noise over gradients, quality 90:
the size and entropy of phone photos; ``--camera-sizes 1280x960`` makes 350 KiB ones, for the
pipeline's cost per 300 KB file), each JPEG upload made unique by a comment (the other samples are
sent as they are: Sluice does not deduplicate). Not a test: nothing is asserted. It loads the
machine: run it alone.

Every process logs at ``--log-level`` (``SLUICE_LOG_LEVEL``), by default ``info``, the level a
deployment runs at: a line per message handled, per upload, per request is part of the cost
measured (``warning`` leaves it out, to see what it costs).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg
import pyclamd
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from shared import devservices  # noqa: E402
from shared.imaging.render import render_thumbnails  # noqa: E402
from shared.status import FINAL  # noqa: E402
from shared.topology import Topology  # noqa: E402

PREFIX = "bench"
BUCKET = "sluice-bench"
DATABASE = "sluice_bench"
STAGES = ("scan", "store", "thumbnail", "commit")
SAMPLES = {
    "photo-rotated.jpg": "image/jpeg",
    "photo.png": "image/png",
    "animation.gif": "image/gif",
    "photo.webp": "image/webp",
    "photo.heic": "image/heic",
    "document.pdf": "application/pdf",
}
CAMERA_SIZES = ((4032, 3024), (3264, 2448), (1920, 1080))
#: Uploads up to this size, in bytes, get their own 202 latency line (the samples, 1-247 KB: the
#: target's "100 KB file" while the pipeline runs at full load).
SMALL_BYTES = 256 * 1024
#: Shared services whose CPU is reported, by process name.
SERVICES = {"clamd": "clamd", "weed": "SeaweedFS", "beam.smp": "RabbitMQ", "postgres": "PostgreSQL"}


@dataclass(frozen=True)
class Upload:
    """One upload; a JPEG's bytes are made unique (:func:`unique`) when read, so a corpus of
    thousands of camera photos holds only its few base images in memory."""

    name: str
    base: bytes
    content_type: str
    number: int | None = None

    @property
    def data(self) -> bytes:
        return self.base if self.number is None else unique(self.base, self.number)

    @property
    def size_bytes(self) -> int:
        extra = 0 if self.number is None else 4 + len(f"sluice bench {RUN_TOKEN} {self.number}")
        return len(self.base) + extra


# -- the corpus ---------------------------------------------------------------------------------


def camera_photo(size: tuple[int, int], seed: int) -> bytes:
    """A ``size`` JPEG at quality 90 with a phone photo's entropy: smooth gradients under
    Gaussian noise (a few MB for 12 MP)."""
    width, height = size
    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    tint = Image.new("RGB", (width, height), tuple(rng.randrange(60, 200) for _ in range(3)))
    noise = Image.effect_noise((width, height), 28).convert("RGB")
    image = Image.blend(Image.blend(base, tint, 0.5), noise, 0.25)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


#: Part of every upload's comment: each run's files are new to clamd, which caches the verdict
#: of bytes it has scanned (a second run of the same corpus cost it 6 ms a file instead of 47).
RUN_TOKEN = os.urandom(4).hex()


def unique(data: bytes, n: int) -> bytes:
    """``data`` (a JPEG) with a comment segment naming this run and ``n`` right after its SOI
    marker."""
    comment = f"sluice bench {RUN_TOKEN} {n}".encode()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def corpus(
    files: int,
    camera_share: float,
    seed: int = 1,
    camera_sizes: tuple[tuple[int, int], ...] = CAMERA_SIZES,
) -> list[Upload]:
    """``files`` uploads: about ``camera_share`` of them camera JPEGs of ``camera_sizes``, the
    rest samples."""
    rng = random.Random(seed)
    cameras = [camera_photo(size, i) for i, size in enumerate(camera_sizes)]
    samples = [(n, (REPO_ROOT / "samples" / n).read_bytes(), t) for n, t in SAMPLES.items()]
    uploads = []
    for n in range(files):
        if rng.random() < camera_share:
            uploads.append(Upload(f"camera-{n}.jpg", rng.choice(cameras), "image/jpeg", n))
        else:
            name, data, content_type = rng.choice(samples)
            number = n if content_type == "image/jpeg" else None
            uploads.append(Upload(f"{n}-{name}", data, content_type, number))
    return uploads


# -- raw rates ----------------------------------------------------------------------------------


def raw_rate(work: Callable[[Upload], object], uploads: list[Upload], seconds: float) -> float:
    """Uploads per second of ``work``, one after the other over the corpus for ``seconds``."""
    work(uploads[0])  # warm up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        work(uploads[count % len(uploads)])
        count += 1
    return count / elapsed


def pillow_thumbnail(upload: Upload) -> bytes:
    """Raw Pillow: open, 256 px thumbnail without draft, WebP at quality 80."""
    with Image.open(io.BytesIO(upload.data)) as image:
        image.thumbnail((256, 256), reducing_gap=None)
        out = io.BytesIO()
        image.convert("RGB").save(out, "WEBP", quality=80)
        return out.getvalue()


#: Uploads the raw rates cycle over, their bytes made beforehand (outside the timing).
RAW_SAMPLE = 400


def raw_rates(uploads: list[Upload], seconds: float) -> dict[str, float]:
    """Files per second of each stage's own work on ``uploads`` (images only for thumbnails);
    the first :data:`RAW_SAMPLE` uploads, their bytes made before timing."""
    config = devservices.DevServicesConfig.from_env()
    uploads = [Upload(u.name, u.data, u.content_type) for u in uploads[:RAW_SAMPLE]]
    images = [u for u in uploads if u.content_type.startswith("image/")]
    s3 = devservices.s3_client(config, timeout_s=30.0)
    clamd = pyclamd.ClamdNetworkSocket("127.0.0.1", config.clamd_port, timeout=60)
    keys = iter(range(10**9))
    return {
        "pillow 256 px WebP": raw_rate(pillow_thumbnail, images, seconds),
        "render_thumbnails": raw_rate(
            lambda u: render_thumbnails(u.data, u.content_type), images, seconds
        ),
        "S3 PUT": raw_rate(
            lambda u: s3.put_object(Bucket=BUCKET, Key=f"raw/{next(keys)}", Body=u.data),
            uploads,
            seconds,
        ),
        "clamd INSTREAM": raw_rate(lambda u: clamd.scan_stream(u.data), uploads, seconds),
    }


# -- one run of the pipeline -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Run:
    """One pipeline with ``workers`` processes per stage, in ``tmp``."""

    workers: int
    tmp: Path
    config: devservices.DevServicesConfig
    log_level: str = "info"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    health_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = free_port()
        server = self.config.database_url.rsplit("/", 1)[0]
        self.server_url, self.database_url = server, f"{server}/{DATABASE}"
        self.env = {
            **os.environ,
            "SLUICE_DATABASE_URL": self.database_url,
            "SLUICE_AMQP_URL": self.config.amqp_url,
            "SLUICE_AMQP_PREFIX": PREFIX,
            "S3_BUCKET_NAME": BUCKET,
            "SLUICE_SPOOL_DIR": str(self.tmp / "spool"),
            "SLUICE_GATEWAY_PORT": str(self.port),
            "SLUICE_GATEWAY_METRICS_PORT": str(free_port()),
            "SLUICE_GATEWAY_MAX_CONCURRENT_UPLOADS_PER_OWNER": "64",
            "SLUICE_LOG_FORMAT": "json",
            "SLUICE_LOG_LEVEL": self.log_level,
        }

    def sluice(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "services", *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"sluice {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def prepare(self) -> str:
        """A fresh database, topology, bucket and spool; returns an upload key."""
        with psycopg.connect(f"{self.server_url}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        self.sluice("migrate")
        asyncio.run(_delete_topology(self.config.amqp_url))
        s3 = devservices.s3_client(self.config, timeout_s=30.0)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=item["Key"])
        output = self.sluice("keys", "create", "bench")
        return next(word for word in output.split() if word.startswith("slk_"))

    def start(self) -> None:
        names = ["gateway", "fallback"] + [
            f"{stage}-{i}" for stage in STAGES for i in range(self.workers)
        ]
        for name in names:
            kind = name.split("-")[0]
            env = dict(self.env)
            command = ["gateway"] if kind == "gateway" else ["worker", kind]
            if kind != "gateway":
                self.health_ports[name] = free_port()
                env["SLUICE_WORKER_HEALTH_PORT"] = str(self.health_ports[name])
            log = (self.tmp / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "services", *command],
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 120
        while waiting := self._not_ready():
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready after 120 s: {waiting}; logs in {self.tmp}")
            time.sleep(0.3)

    def _not_ready(self) -> list[str]:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}; see {self.tmp}")
        urls = {"gateway": f"http://127.0.0.1:{self.port}/healthz"} | {
            name: f"http://127.0.0.1:{port}/readyz" for name, port in self.health_ports.items()
        }
        waiting = []
        for name, url in urls.items():
            try:
                if httpx.get(url, timeout=2).status_code != 200:
                    waiting.append(name)
            except httpx.HTTPError:
                waiting.append(name)
        return waiting

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each Sluice process kind and each shared service."""
        totals: dict[str, float] = {}
        for name, process in self.processes.items():
            totals[name.split("-")[0]] = totals.get(name.split("-")[0], 0.0) + _cpu_s(
                [psutil.Process(process.pid)]
            )
        for proc in psutil.process_iter(["name", "ppid"]):
            label = SERVICES.get(proc.info["name"] or "")
            try:  # a service's own children (PostgreSQL's backends) count with their parent
                nested = label and psutil.Process(proc.info["ppid"]).name() == proc.info["name"]
            except psutil.Error:
                nested = False
            if label and not nested:
                totals[label] = totals.get(label, 0.0) + _cpu_s([proc])
        return totals

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def _cpu_s(processes: Iterable[psutil.Process]) -> float:
    """CPU seconds of ``processes`` and their children: the live ones, and those that exited
    and were waited for (a thumbnail worker's recycled render processes)."""
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
            total += sum(_cpu_s([child]) for child in proc.children(recursive=False))
        except psutil.Error:
            pass
    return total


async def _delete_topology(amqp_url: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url, timeout=30)
    async with connection:
        await Topology(prefix=PREFIX).delete(await connection.channel())


async def upload_all(
    url: str, key: str, uploads: list[Upload], concurrency: int, rate: float = 0.0
) -> tuple[list[str], list[tuple[int, float]], int]:
    """Send every upload, ``concurrency`` at a time and, when ``rate`` > 0, starting at most
    ``rate`` per second (evenly spaced); the accepted file ids, each accepted upload's size
    (bytes) and 202 latency (s), and the number refused."""
    accepted: list[str] = []
    latencies: list[float] = []
    sizes: list[int] = []
    refused = 0
    queue = list(reversed(uploads))
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    sent = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

        async def sender() -> None:
            nonlocal refused, sent
            while queue:
                upload = queue.pop()
                if rate > 0:
                    sent += 1
                    await asyncio.sleep(max(0.0, started + (sent - 1) / rate - time.monotonic()))
                files = {"file": (upload.name, upload.data, upload.content_type)}
                start = time.perf_counter()
                answer = await client.post("/v1/files", files=files)
                if answer.status_code == 202:
                    latencies.append(time.perf_counter() - start)
                    sizes.append(upload.size_bytes)
                    accepted.append(answer.json()["file_id"])
                else:
                    refused += 1

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return accepted, list(zip(sizes, latencies, strict=True)), refused


def wait_final(database_url: str, file_ids: list[str], timeout_s: float) -> float:
    """Wait until every file is final; the time it happened (``time.monotonic()``)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            (done,) = conn.execute(
                "SELECT count(*) FROM files WHERE file_id = ANY(%s::uuid[]) AND status = ANY(%s)",
                (file_ids, [str(s) for s in FINAL]),
            ).fetchone() or (0,)
            if done == len(file_ids):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done}/{len(file_ids)} final after {timeout_s:g} s")
            time.sleep(0.1)


def lags(database_url: str) -> tuple[list[float], list[float]]:
    """Per file: received -> ``file.stored`` or ``file.rejected`` recorded (the file is
    available, or final), and received -> ``file.committed`` recorded (every stage done,
    thumbnails included), seconds."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT extract(epoch FROM min(e.recorded_at) FILTER (
                       WHERE e.event_type IN ('file.stored', 'file.rejected')) - f.received_at),
                   extract(epoch FROM max(e.recorded_at) FILTER (
                       WHERE e.event_type = 'file.committed') - f.received_at)
            FROM files f JOIN file_events e USING (file_id)
            GROUP BY f.file_id, f.received_at
            """
        ).fetchall()
    return (
        [float(r[0]) for r in rows if r[0] is not None],
        [float(r[1]) for r in rows if r[1] is not None],
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class MemorySampler(threading.Thread):
    """Every ``interval_s``: how many files are final, and the resident memory (RSS, bytes) of
    each Sluice process, alone and with its children (the thumbnail stage's render processes).

    ``growth()`` compares each process at the first sample with at least ``share`` of the
    files final against the last sample: the issue's "no process grows by more than 10 % after
    the first 500 of 5,000".
    """

    def __init__(self, run: Run, file_count: int, interval_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.file_count = file_count
        self.interval_s = interval_s
        self.samples: list[tuple[int, dict[str, tuple[int, int]]]] = []
        self.stopped = threading.Event()

    def sample(self, conn: psycopg.Connection[tuple[int]]) -> None:
        (final,) = conn.execute(
            "SELECT count(*) FROM files WHERE status = ANY(%s)", ([str(s) for s in FINAL],)
        ).fetchone() or (0,)
        rss: dict[str, tuple[int, int]] = {}
        for name, process in self.run_.processes.items():
            try:
                proc = psutil.Process(process.pid)
                own = int(proc.memory_info().rss)
                children = sum(int(c.memory_info().rss) for c in proc.children(recursive=True))
            except psutil.Error:
                continue
            rss[name] = (own, own + children)
        self.samples.append((final, rss))

    def run(self) -> None:
        with psycopg.connect(self.run_.database_url, autocommit=True) as conn:
            while not self.stopped.wait(self.interval_s):
                self.sample(conn)
            self.sample(conn)

    def growth(self, share: float = 0.1) -> dict[str, tuple[float, float, float]]:
        """Per process: RSS (MiB) once ``share`` of the files are final, at the end, and the
        largest seen, the process alone."""
        if not self.samples:
            return {}
        threshold = share * self.file_count
        early = next((rss for final, rss in self.samples if final >= threshold), None)
        if early is None:
            return {}
        last = self.samples[-1][1]
        peak = {name: max(rss[name][0] for _, rss in self.samples if name in rss) for name in last}
        mib = 1024 * 1024
        return {
            name: (early[name][0] / mib, last[name][0] / mib, peak[name] / mib)
            for name in last
            if name in early
        }


@dataclass
class Result:
    workers: int
    files: int
    refused: int
    megabytes: float
    elapsed_s: float
    accepted_latency: list[float]
    small_latency: list[float]
    to_final: list[float]
    to_last_event: list[float]
    cpu_per_file: dict[str, float]
    memory: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.files / self.elapsed_s


def run_pipeline(workers: int, uploads: list[Upload], args: argparse.Namespace) -> Result:
    config = devservices.DevServicesConfig.from_env()
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-"))  # kept if the run fails: the logs
    run = Run(workers, tmp, config, log_level=args.log_level)
    key = run.prepare()
    try:
        run.start()
        before = run.cpu()
        sampler = MemorySampler(run, len(uploads))
        sampler.start()
        start = time.monotonic()
        accepted, latencies, refused = asyncio.run(
            upload_all(f"http://127.0.0.1:{run.port}", key, uploads, args.concurrency, args.rate)
        )
        end = wait_final(run.database_url, accepted, args.timeout)
        after = run.cpu()
        sampler.stopped.set()
        sampler.join()
        to_final, to_last = lags(run.database_url)
    finally:
        run.stop()
    if args.keep_logs:
        print(f"logs of the run with {workers} worker(s) per stage: {tmp}")
    else:
        shutil.rmtree(tmp)
    files = len(accepted)
    return Result(
        workers=workers,
        files=files,
        refused=refused,
        megabytes=sum(u.size_bytes for u in uploads) / 1e6,
        elapsed_s=end - start,
        accepted_latency=[seconds for _, seconds in latencies],
        small_latency=[seconds for size, seconds in latencies if size <= SMALL_BYTES],
        to_final=to_final,
        to_last_event=to_last,
        cpu_per_file={k: (after[k] - before.get(k, 0.0)) / files for k in after},
        memory=sampler.growth(),
    )


def report(results: list[Result], raw: dict[str, float]) -> None:
    print("\nraw rates, one thread, same corpus (files/s):")
    for name, value in raw.items():
        print(f"  {name:<22}{value:>9.1f}")
    print()
    kinds = ["gateway", *STAGES, "fallback", *SERVICES.values()]
    header = f"{'':<34}" + "".join(f"{f'K={r.workers}':>12}" for r in results)
    print(header)

    def row(label: str, values: Iterable[str]) -> None:
        print(f"{label:<34}" + "".join(f"{v:>12}" for v in values))

    row("files (refused)", (f"{r.files} ({r.refused})" for r in results))
    row("files/s end to end", (f"{r.files_per_s:.2f}" for r in results))
    row("MB/s end to end", (f"{r.megabytes / r.elapsed_s:.2f}" for r in results))
    for name, value in raw.items():
        row(f"ratio to raw {name}", (f"{r.files_per_s / value:.2f}" for r in results))
    for label, pick in (
        ("202 latency", lambda r: r.accepted_latency),
        ("202 latency, files <= 256 KiB", lambda r: r.small_latency),
        ("received->stored/rejected", lambda r: r.to_final),
        ("received->committed", lambda r: r.to_last_event),
    ):
        for q in (0.5, 0.99):
            row(
                f"{label} p{round(q * 100)} (ms)",
                (f"{percentile(pick(r), q) * 1e3:.0f}" for r in results),
            )
    for kind in kinds:
        row(f"CPU ms/file {kind}", (f"{r.cpu_per_file.get(kind, 0.0) * 1e3:.1f}" for r in results))
    pipeline_kinds = ("gateway", "scan", "store", "commit")
    row(
        "CPU ms/file gateway+scan+store+commit",
        (f"{sum(r.cpu_per_file.get(k, 0.0) for k in pipeline_kinds) * 1e3:.1f}" for r in results),
    )
    for r in results:
        print(f"\nRSS, K={r.workers} (MiB; the process alone): at 10 % of files final -> end, peak")
        for name, (early, last, peak) in sorted(r.memory.items()):
            growth = (last - early) / early * 100 if early else 0.0
            print(f"  {name:<14}{early:>8.0f} -> {last:>5.0f} ({growth:+5.1f} %), peak {peak:.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the whole pipeline against raw stage rates")
    parser.add_argument("--files", type=int, default=200, help="uploads per run")
    parser.add_argument("--concurrency", type=int, default=8, help="uploads in flight at once")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="uploads started per second (0: no limit)"
    )
    parser.add_argument(
        "--workers-per-stage", type=int, nargs="+", default=[1, 2], help="one run per value"
    )
    parser.add_argument(
        "--camera-share", type=float, default=0.5, help="share of camera-size JPEGs, 0-1"
    )
    parser.add_argument(
        "--camera-sizes",
        nargs="+",
        default=[f"{w}x{h}" for w, h in CAMERA_SIZES],
        help="camera JPEG sizes, WxH (1280x960: about 350 KiB each)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep each run's directory (the processes' logs)"
    )
    parser.add_argument("--raw-seconds", type=float, default=5.0, help="time per raw rate")
    parser.add_argument("--timeout", type=float, default=900.0, help="wait for final, seconds")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="SLUICE_LOG_LEVEL of every process (info: as deployed)",
    )
    args = parser.parse_args(argv)

    devservices.up(buckets=[BUCKET])
    sizes = tuple(
        (int(width), int(height))
        for width, height in (size.split("x") for size in args.camera_sizes)
    )
    uploads = corpus(args.files, args.camera_share, camera_sizes=sizes)
    megabytes = sum(u.size_bytes for u in uploads) / 1e6
    print(f"corpus: {len(uploads)} files, {megabytes:.1f} MB, {os.cpu_count()} cores")
    print(
        f"stage workers' niceness (SLUICE_WORKER_NICE): {os.environ.get('SLUICE_WORKER_NICE', 0)}"
    )
    print(f"log level of every process (SLUICE_LOG_LEVEL): {args.log_level}")
    results = []
    for workers in args.workers_per_stage:
        print(f"running with {workers} worker(s) per stage ...", flush=True)
        results.append(run_pipeline(workers, uploads, args))
    print("raw rates ...", flush=True)
    raw = raw_rates(uploads, args.raw_seconds)
    report(results, raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
