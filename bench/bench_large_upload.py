"""A large upload through the gateway, against a raw S3 PUT of the same bytes in the same run.

Usage::

    python bench/bench_large_upload.py [--mib 100] [--rounds 3] [--spool local s3]
                                       [--client python curl]

For each spool backend, it starts the real gateway alone (``bench/pipeline.py``'s ``Run`` with no
stage workers: the event waits in its queue), with the PDF limit raised to fit, and times, one at
a time and ``--rounds`` times each, with each client:

- ``raw put``: one ``PutObject`` of the same bytes with their SHA-256 as
  ``x-amz-checksum-sha256``, the baseline a client would get writing to S3 itself;
- ``upload``: ``POST /v1/files`` of the same bytes (a multipart form), until its ``202``.

Clients: ``python`` is botocore for the PUT (which also hashes the payload for its SigV4
signature over plain HTTP) and httpx for the upload; ``curl`` is curl for both
(``--aws-sigv4`` with ``UNSIGNED-PAYLOAD`` and the checksum header signed, as the gateway's own
S3 client sends; ``-F`` for the form). Client, gateway and SeaweedFS share the machine's two
cores, so a client's own CPU counts against the gateway: each upload is compared with the raw
PUT of its own client, the better of the runs before and after.

It prints the best MB/s of each, their ratio (above 1: the gateway is faster), and the
gateway's resident memory (RSS, sampled every 50 ms by psutil) before the first upload, at its
peak, and after the last: the growth a large upload costs. Not a test: nothing is asserted. It
loads the machine: run it alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from dataclasses import dataclass, field
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


def seaweedfs_processes() -> list[psutil.Process]:
    """The running SeaweedFS processes (``weed``), whose CPU a PUT costs."""
    return [p for p in psutil.process_iter(["name"]) if "weed" in (p.info["name"] or "")]


def cpu_s(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``processes`` so far."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


#: The region SigV4 signs for (``shared.devservices``' SeaweedFS takes any).
REGION = "us-east-1"


def curl_put_mb_s(config: devservices.DevServicesConfig, path: Path, rounds: int) -> float:
    """Best MB/s of ``rounds`` curl PUTs of ``path`` (SigV4, unsigned payload, checksummed)."""
    data = path.read_bytes()
    checksum = b64encode(hashlib.sha256(data).digest()).decode()
    s3 = devservices.s3_client(config)
    best = 0.0
    for n in range(rounds):
        key = f"bench-large-curl-{n}"
        command = [
            *("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"),
            *("--aws-sigv4", f"aws:amz:{REGION}:s3"),
            *("--user", f"{config.s3_access_key}:{config.s3_secret_key}"),
            *("-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"),
            *("-H", f"x-amz-checksum-sha256: {checksum}"),
            *("-H", "Content-Type: application/octet-stream"),
            *("--upload-file", str(path), f"http://127.0.0.1:{config.s3_port}/{BUCKET}/{key}"),
        ]
        started = time.perf_counter()
        answer = subprocess.run(command, capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - started
        if answer.stdout != "200":
            raise RuntimeError(f"curl PUT answered {answer.stdout}: {answer.stderr}")
        best = max(best, len(data) / 1e6 / elapsed)
        s3.delete_object(Bucket=BUCKET, Key=key)
    return best


def curl_upload(url: str, key: str, path: Path, name: str) -> None:
    """``POST /v1/files`` of ``path`` with curl.

    Raises:
        RuntimeError: the answer is not 202.
    """
    command = [
        *("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"),
        *("-H", f"Authorization: Bearer {key}"),
        *("-F", f"file=@{path};type=application/pdf;filename={name}", f"{url}/v1/files"),
    ]
    answer = subprocess.run(command, capture_output=True, text=True, check=True)
    if answer.stdout != "202":
        raise RuntimeError(f"curl upload answered {answer.stdout}: {answer.stderr}")


@dataclass
class Samples:
    """One client's rounds on one spool: MB/s of each raw PUT and of the upload right after it,
    and the CPU seconds each cost (SeaweedFS for the PUT; gateway and SeaweedFS for the upload)."""

    raw_mb_s: list[float] = field(default_factory=list)
    upload_mb_s: list[float] = field(default_factory=list)
    raw_seaweedfs_cpu_s: list[float] = field(default_factory=list)
    gateway_cpu_s: list[float] = field(default_factory=list)
    upload_seaweedfs_cpu_s: list[float] = field(default_factory=list)

    def paired_ratio(self) -> float:
        """Median over rounds of upload MB/s / the raw PUT's just before it."""
        return statistics.median(
            u / r for u, r in zip(self.upload_mb_s, self.raw_mb_s, strict=True)
        )

    def cpu_bound(self) -> float:
        """The ratio the CPU allows when SeaweedFS alone fills every core during a raw PUT:
        SeaweedFS's CPU per PUT over SeaweedFS's and the gateway's per upload (medians)."""
        upload = statistics.median(self.upload_seaweedfs_cpu_s) + statistics.median(
            self.gateway_cpu_s
        )
        return statistics.median(self.raw_seaweedfs_cpu_s) / upload


def bench_spool(
    spool: str,
    data: bytes,
    path: Path,
    rounds: int,
    clients: list[str],
    config: devservices.DevServicesConfig,
) -> tuple[dict[str, Samples], dict[str, float]]:
    """Each client's :class:`Samples` through a gateway on ``spool``, and the gateway's RSS
    (``rss_before_mib``, ``rss_peak_mib``, ``rss_after_mib``).

    A round is, per client, a raw PUT then an upload, each after ``sync(2)``: the page cache's
    dirty bytes of the last one are on disk before the next is timed."""
    seaweedfs = seaweedfs_processes()
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
            gateway = psutil.Process(run.processes["gateway"].pid)
            with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
                small = {"file": ("warm-up.pdf", data[: 64 * 1024], "application/pdf")}
                client.post("/v1/files", files=small).raise_for_status()
                sampler = RssSampler(gateway.pid)
                before = sampler.now()
                sampler.start()
                samples = {name: Samples() for name in clients}
                for n in range(rounds):
                    for name, got in samples.items():
                        os.sync()
                        spent = cpu_s(seaweedfs)
                        if name == "curl":
                            got.raw_mb_s.append(curl_put_mb_s(config, path, 1))
                        else:
                            got.raw_mb_s.append(raw_put_mb_s(config, data, 1))
                        got.raw_seaweedfs_cpu_s.append(cpu_s(seaweedfs) - spent)
                        os.sync()
                        spent, spent_gateway = cpu_s(seaweedfs), cpu_s([gateway])
                        started = time.perf_counter()
                        if name == "curl":
                            curl_upload(url, key, path, f"large-curl-{n}.pdf")
                        else:
                            files = {"file": (f"large-{n}.pdf", data, "application/pdf")}
                            client.post("/v1/files", files=files).raise_for_status()
                        got.upload_mb_s.append(len(data) / 1e6 / (time.perf_counter() - started))
                        got.gateway_cpu_s.append(cpu_s([gateway]) - spent_gateway)
                        got.upload_seaweedfs_cpu_s.append(cpu_s(seaweedfs) - spent)
                sampler.stopped.set()
                sampler.join()
                after = sampler.now()
        finally:
            run.stop()
    return samples, {
        "rss_before_mib": before / MiB,
        "rss_peak_mib": max(sampler.peak_bytes, after) / MiB,
        "rss_after_mib": after / MiB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a large upload against a raw S3 PUT")
    parser.add_argument("--mib", type=int, default=100, help="upload size, MiB")
    parser.add_argument("--rounds", type=int, default=6, help="raw PUT + upload pairs per client")
    parser.add_argument("--spool", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument(
        "--client", nargs="+", default=["python", "curl"], choices=["python", "curl"]
    )
    args = parser.parse_args(argv)

    config = devservices.DevServicesConfig.from_env()
    devservices.up(config, buckets=[BUCKET, "sluice-quarantine"])
    data = payload(args.mib)
    print(f"{args.mib} MiB, {args.rounds} rounds, {os.cpu_count()} cores")
    with tempfile.NamedTemporaryFile(prefix="sluice-bench-large-", suffix=".pdf") as file:
        path = Path(file.name)
        path.write_bytes(data)
        results = {
            spool: bench_spool(spool, data, path, args.rounds, args.client, config)
            for spool in args.spool
        }
    for spool, (samples, rss) in results.items():
        for name, got in samples.items():
            print(f"{spool} spool, {name}")
            for label, rates in (
                ("raw S3 PutObject", got.raw_mb_s),
                ("POST /v1/files", got.upload_mb_s),
            ):
                print(
                    f"  {label:<20} MB/s best {max(rates):6.1f}"
                    f"  median {statistics.median(rates):6.1f}"
                    f"   ({' '.join(f'{rate:.0f}' for rate in rates)})"
                )
            print(
                f"  ratio: best to best {max(got.upload_mb_s) / max(got.raw_mb_s):.2f}, median of"
                f" the rounds' {got.paired_ratio():.2f}"
            )
            print(
                "  CPU s (medians): raw PUT, SeaweedFS"
                f" {statistics.median(got.raw_seaweedfs_cpu_s):.2f};"
                f" upload, SeaweedFS {statistics.median(got.upload_seaweedfs_cpu_s):.2f} + gateway"
                f" {statistics.median(got.gateway_cpu_s):.2f}: CPU bound {got.cpu_bound():.2f}"
            )
        print(
            f"  gateway RSS: {rss['rss_before_mib']:.0f} -> peak {rss['rss_peak_mib']:.0f} ->"
            f" {rss['rss_after_mib']:.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
