"""What a PATCH and a new version cost, against their baselines in the same run.

Usage::

    python bench/bench_edits.py [--edits 50] [--versions 10]

Starts one ``sluice run`` (every worker and the gateway as processes, on a fresh database
``sluice_benchedits``, prefix and bucket of that name) through ``tests/e2e/pipeline.py``, then:

- ``PATCH /v1/files/{id}`` ``--edits`` times, one after the other: the time to its 200 (the
  event published with a confirm, consumed and applied by the commit stage, the notice, the
  file read back), against a plain ``GET /v1/files/{id}`` of the same file (the baseline);
- ``--versions`` new versions of one file, one after the other, each waited for, against as
  many first uploads of the same bytes: received -> ``file.committed`` recorded, from the
  database's timestamps.

Milliseconds, p50 / p95, and the ratios of the p50s. Not a test: nothing is asserted. Needs
``sluice services up``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.pipeline import Pipeline, start_pipeline  # noqa: E402

SAMPLE = ROOT / "samples" / "photo.png"


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def timed(call: object) -> float:
    started = time.perf_counter()
    call()  # type: ignore[operator]
    return (time.perf_counter() - started) * 1000


def committed_ms(pipeline: Pipeline, file_id: str, version: int) -> float:
    rows = pipeline.sql(
        "SELECT event_type, recorded_at FROM file_events"
        " WHERE file_id = %s AND version_number = %s",
        file_id,
        version,
    )
    at = {kind: when for kind, when in rows}
    return (at["file.committed"] - at["file.received"]).total_seconds() * 1000


def wait_committed(pipeline: Pipeline, file_id: str, version: int) -> None:
    for _ in range(1200):
        if pipeline.sql(
            "SELECT 1 FROM file_events WHERE file_id = %s AND version_number = %s"
            " AND event_type = 'file.committed'",
            file_id,
            version,
        ):
            return
        time.sleep(0.05)
    raise SystemExit(f"version {version} of {file_id} not committed")


def run(pipeline: Pipeline, edits: int, versions: int) -> None:
    data = SAMPLE.read_bytes()
    with pipeline.client() as client:
        file_id = client.post("/v1/files", files={"file": (SAMPLE.name, data)}).json()["file_id"]
        pipeline.wait_final(file_id)
        gets = [timed(lambda: client.get(f"/v1/files/{file_id}")) for _ in range(edits)]
        patches = []
        for n in range(edits):
            body = {"metadata": {"n": n}}
            patches.append(
                timed(
                    lambda b=body: client.patch(f"/v1/files/{file_id}", json=b).raise_for_status()
                )
            )
        firsts, news = [], []
        for _ in range(versions):
            other = client.post("/v1/files", files={"file": (SAMPLE.name, data)}).json()["file_id"]
            wait_committed(pipeline, other, 1)
            firsts.append(committed_ms(pipeline, other, 1))
            answer = client.post(
                f"/v1/files/{file_id}/versions", files={"file": (SAMPLE.name, data)}
            )
            number = answer.json()["version_number"]
            wait_committed(pipeline, file_id, number)
            news.append(committed_ms(pipeline, file_id, number))
    for name, values, base in (
        ("PATCH -> 200 vs GET", patches, gets),
        ("new version vs first upload (received -> committed)", news, firsts),
    ):
        print(
            f"{name}: {p(values, 50):.1f} / {p(values, 95):.1f} ms vs "
            f"{p(base, 50):.1f} / {p(base, 95):.1f} ms (p50 / p95), "
            f"ratio {p(values, 50) / p(base, 50):.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--versions", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pipelines = start_pipeline(Path(tmp), "benchedits")
        pipeline = next(pipelines)
        try:
            run(pipeline, args.edits, args.versions)
        finally:
            pipelines.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
