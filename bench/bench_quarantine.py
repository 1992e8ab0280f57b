"""The S3 spool's cost against raw S3 calls, measured in the same run on the local SeaweedFS.

Usage::

    python bench/bench_quarantine.py [--count 20] [--rounds 3]

For files of 1 MiB (one part of the default 8 MiB quarantine multipart upload) and 9 MiB (two
parts), it times, one at a time, through aiobotocore:

- ``raw put``: one ``PutObject`` with ``ChecksumSHA256`` (the baseline: what the store stage
  does for a local-spool file, without reading it from disk);
- ``quarantine write``: :class:`~shared.adapters.quarantine.QuarantineWriter`, the gateway's
  write, in 256 KiB chunks (CreateMultipartUpload, UploadPart with SHA-256, Complete);
- ``promote``: :meth:`~shared.adapters.quarantine.QuarantineSpool.promote`, the store stage's
  server-side copy with its check (HEAD, CopyObject, HEAD for one part; GET and hash for two);
- ``read + put``: what the store stage would do instead, GET the quarantined bytes then
  ``PutObject`` them.

The best of ``--rounds`` rounds counts; files per second and the ratio to ``raw put`` (above 1:
faster). Not a test: nothing is asserted. Needs ``sluice services up``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from shared import devservices  # noqa: E402
from shared.adapters.quarantine import QuarantineSpool  # noqa: E402
from shared.adapters.storage import S3ObjectStorage  # noqa: E402
from shared.settings import S3Settings  # noqa: E402

MiB = 1024 * 1024
QUARANTINE, FINAL = "sluice-bench-quarantine", "sluice-bench-final"


async def best_rate(count: int, rounds: int, one: Callable[[int], Awaitable[None]]) -> float:
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for index in range(count):
            await one(index)
        best = max(best, count / (time.perf_counter() - started))
    return best


async def main(count: int, rounds: int) -> None:
    config = devservices.DevServicesConfig.from_env()
    devservices.up(config, only=["seaweedfs"], buckets=[QUARANTINE, FINAL])

    def s3(bucket: str) -> S3Settings:
        return S3Settings(
            endpoint=config.s3_endpoint,
            access_key=config.s3_access_key,
            secret_key=config.s3_secret_key,
            bucket_name=bucket,
        )

    async with S3ObjectStorage(s3(QUARANTINE)) as qs, S3ObjectStorage(s3(FINAL)) as final:
        spool = QuarantineSpool(qs, part_size_bytes=8 * MiB)
        print(f"{'size':>6} {'operation':<17} {'files/s':>8} {'MiB/s':>7} {'vs raw put':>10}")
        for size in (1 * MiB, 9 * MiB):
            data = os.urandom(size)
            sha = hashlib.sha256(data).hexdigest()
            names = [str(uuid.uuid4()) for _ in range(count)]

            async def raw_put(i: int, data: bytes = data, sha: str = sha) -> None:
                await final.put_bytes(f"raw/{i}", data, sha256_hex=sha, content_type="x/y")

            async def write(i: int, data: bytes = data, names: list[str] = names) -> None:
                async with await spool.open_writer(names[i]) as writer:
                    for start in range(0, len(data), 256 * 1024):
                        await writer.write(data[start : start + 256 * 1024])
                    await writer.commit()

            async def promote(
                i: int, sha: str = sha, size: int = size, names: list[str] = names
            ) -> None:
                await spool.promote(
                    spool.reference(names[i]),
                    bucket=FINAL,
                    key=f"promoted/{i}",
                    sha256_hex=sha,
                    size_bytes=size,
                    content_type="x/y",
                )

            async def read_put(i: int, sha: str = sha, names: list[str] = names) -> None:
                data = await spool.read_bytes(spool.reference(names[i]))
                await final.put_bytes(f"copied/{i}", data, sha256_hex=sha, content_type="x/y")

            raw = await best_rate(count, rounds, raw_put)
            for label, one in (
                ("raw put", raw_put),
                ("quarantine write", write),
                ("promote", promote),
                ("read + put", read_put),
            ):
                rate = raw if one is raw_put else await best_rate(count, rounds, one)
                print(
                    f"{size // MiB:>4}Mi {label:<17} {rate:>8.1f} {rate * size / MiB:>7.1f} "
                    f"{rate / raw:>10.2f}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.count, arguments.rounds))
