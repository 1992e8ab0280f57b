"""A large upload through the gateway, against a raw S3 PUT of the same bytes in the same run.

Usage::

    python bench/bench_large_upload.py [--mib 100] [--rounds 3] [--spool local s3]

For each spool backend, it starts the real gateway alone (``bench/pipeline.py``'s ``Run`` with no
stage workers: the event waits in its queue), with the PDF limit raised to fit, and times, one at
a time and ``--rounds`` times each:

- ``raw put``: one ``PutObject`` of the same bytes with ``ChecksumSHA256`` (botocore), the
  baseline a client would get writing to S3 itself;
- ``upload``: ``POST /v1/files`` of the same bytes (multipart form, httpx), until its ``202``.

It prints the best MB/s of each, their ratio (above 1: the gateway is faster), and the
gateway's resident memory (RSS, sampled every 50 ms by psutil) before the first upload, at its
peak, and after the last: the growth a large upload costs. Not a test: nothing is asserted. It
loads the machine: run it alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from pipeline import BUCKET, Run  # noqa: E402

from shared import devservices  # noqa: E402

MiB = 1024 * 1024


class RssSampler(threading.Thread):
    """The RSS of ``pid`` every ``interval_s``; ``peak_bytes`` is the largest seen."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.stopped = threading.Event()

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self.now())


def payload(mib: int) -> bytes:
    """``mib`` MiB that the gateway sniffs as a PDF: a PDF header, then random bytes."""
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + os.urandom(mib * MiB - 15)


def raw_put_mb_s(config: devservices.DevServicesConfig, data: bytes, rounds: int) -> float:
    s3 = devservices.s3_client(config, timeout_s=300.0)
    checksum = b64encode(hashlib.sha256(data).digest()).decode()
    best = 0.0
    for n in range(rounds):
        started = time.perf_counter()
        s3.put_object(Bucket=BUCKET, Key=f"bench-large-{n}", Body=data, ChecksumSHA256=checksum)
        best = max(best, len(data) / 1e6 / (time.perf_counter() - started))
        s3.delete_object(Bucket=BUCKET, Key=f"bench-large-{n}")
    return best


def bench_spool(spool: str, data: bytes, rounds: int) -> dict[str, float]:
    config = devservices.DevServicesConfig.from_env()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-large-") as tmp:
        run = Run(0, Path(tmp), config)
        run.env |= {
            "SLUICE_SPOOL_BACKEND": spool,
            "SLUICE_GATEWAY_MAX_PDF_BYTES": str(len(data) + MiB),
        }
        key = run.prepare()
        run.start()
        try:
            url = f"http://127.0.0.1:{run.port}"
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
                small = {"file": ("warm-up.pdf", data[: 64 * 1024], "application/pdf")}
                client.post("/v1/files", files=small).raise_for_status()
                sampler = RssSampler(run.processes["gateway"].pid)
                before = sampler.now()
                sampler.start()
                best = 0.0
                for n in range(rounds):
                    files = {"file": (f"large-{n}.pdf", data, "application/pdf")}
                    started = time.perf_counter()
                    client.post("/v1/files", files=files).raise_for_status()
                    best = max(best, len(data) / 1e6 / (time.perf_counter() - started))
                sampler.stopped.set()
                sampler.join()
                after = sampler.now()
        finally:
            run.stop()
    return {
        "upload_mb_s": best,
        "rss_before_mib": before / MiB,
        "rss_peak_mib": max(sampler.peak_bytes, after) / MiB,
        "rss_after_mib": after / MiB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a large upload against a raw S3 PUT")
    parser.add_argument("--mib", type=int, default=100, help="upload size, MiB")
    parser.add_argument("--rounds", type=int, default=3, help="uploads per measure; best counts")
    parser.add_argument("--spool", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    args = parser.parse_args(argv)

    config = devservices.DevServicesConfig.from_env()
    devservices.up(config, buckets=[BUCKET, "sluice-quarantine"])
    data = payload(args.mib)
    print(f"{args.mib} MiB, {args.rounds} rounds, {os.cpu_count()} cores")
    raw = raw_put_mb_s(config, data, args.rounds)
    print(f"{'raw S3 PutObject':<28}{raw:>8.1f} MB/s")
    for spool in args.spool:
        result = bench_spool(spool, data, args.rounds)
        print(
            f"{f'POST /v1/files, {spool} spool':<28}{result['upload_mb_s']:>8.1f} MB/s"
            f"   ratio {result['upload_mb_s'] / raw:.2f}"
            f"   gateway RSS {result['rss_before_mib']:.0f} -> peak"
            f" {result['rss_peak_mib']:.0f} -> {result['rss_after_mib']:.0f} MiB"
        )
    raw_after = raw_put_mb_s(config, data, args.rounds)
    print(f"{'raw S3 PutObject (again)':<28}{raw_after:>8.1f} MB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
