"""The worker's rolling window (``/stats``): exact counts over the last minute, percentiles over
raw samples, bounded memory, old messages forgotten."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.telemetry.observers import Handled
from shared.telemetry.stagestats import MAX_SAMPLES, StageStats, percentile, summarise


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def handled(stage: str, outcome: str, duration_ms: float) -> Handled:
    error = None if outcome == "acked" else "Boom"
    return Handled(stage, outcome, duration_ms / 1000, error, "file.received")


def stage_body(stats: StageStats, stage: str, **kwargs: object) -> dict[str, object]:
    stages = stats.snapshot(**kwargs)["stages"]  # type: ignore[arg-type]
    assert isinstance(stages, dict)
    body = stages[stage]
    assert isinstance(body, dict)
    return body


def test_percentile_interpolates_like_numpy_linear() -> None:
    samples = [10.0, 20.0, 30.0, 40.0]
    assert percentile(samples, 0) == 10.0
    assert percentile(samples, 100) == 40.0
    assert percentile(samples, 50) == 25.0
    assert percentile(samples, 95) == pytest.approx(38.5)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile(samples, 101)


@given(st.lists(st.floats(0, 60_000, allow_nan=False), min_size=2, max_size=200))
def test_percentile_agrees_with_the_standard_library(samples: list[float]) -> None:
    # statistics.quantiles(method="inclusive") is the same linear interpolation.
    cuts = statistics.quantiles(samples, n=20, method="inclusive")
    assert percentile(samples, 50) == pytest.approx(cuts[9], abs=1e-6)
    assert percentile(samples, 95) == pytest.approx(cuts[18], abs=1e-6)


def test_counts_by_outcome_and_percentiles_over_the_window() -> None:
    clock = Clock()
    stats = StageStats(window_s=60, clock=clock)
    for ms in range(1, 101):  # 1..100 ms, acked
        stats.record(handled("scan", "acked", ms))
    stats.record(handled("scan", "retry", 5))
    stats.record(handled("scan", "dead-lettered", 5))
    stats.record(handled("scan", "requeued", 5))

    body = stage_body(stats, "scan", in_flight={"scan": 2})

    assert (body["handled"], body["acked"], body["retried"]) == (103, 100, 1)
    assert (body["dead_lettered"], body["requeued"], body["in_flight"]) == (1, 1, 2)
    durations = body["durations_ms"]
    assert isinstance(durations, list) and len(durations) == 103
    assert (body["p50_ms"], body["p95_ms"]) == summarise(durations)
    assert body["p50_ms"] == 49.0  # 100 values 1..100 plus three 5s: the median shifts down


def test_messages_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    stats = StageStats(window_s=60, clock=clock)
    stats.record(handled("store", "acked", 500))
    clock.now += 30
    stats.record(handled("store", "acked", 10))
    assert stage_body(stats, "store")["handled"] == 2

    clock.now += 31  # the first is 61 s old, the second 31 s
    body = stage_body(stats, "store")
    assert (body["handled"], body["acked"], body["durations_ms"]) == (1, 1, [10.0])

    clock.now += 60
    body = stage_body(stats, "store")
    assert (body["handled"], body["p50_ms"], body["p95_ms"]) == (0, None, None)


def test_idle_stages_are_listed_with_zeros() -> None:
    stats = StageStats(clock=Clock())
    snapshot = stats.snapshot({"commit": 0}, stages=["thumbnail"])
    assert snapshot["window_s"] == 60
    assert snapshot["stages"] == {
        name: {
            "handled": 0,
            "acked": 0,
            "retried": 0,
            "dead_lettered": 0,
            "requeued": 0,
            "parked": 0,
            "in_flight": 0,
            "p50_ms": None,
            "p95_ms": None,
            "durations_ms": [],
        }
        for name in ("commit", "thumbnail")
    }


def test_memory_is_bounded_but_counts_stay_exact() -> None:
    clock = Clock()
    stats = StageStats(window_s=60, clock=clock)
    total = 3 * MAX_SAMPLES
    for i in range(total):
        clock.now += 0.005  # about 31 s in all, at 200 messages a second
        stats.record(handled("thumbnail", "acked", 1000 if i < total - MAX_SAMPLES else 20))
    body = stage_body(stats, "thumbnail")
    assert body["handled"] == total
    durations = body["durations_ms"]
    assert isinstance(durations, list) and len(durations) == MAX_SAMPLES
    assert body["p95_ms"] == 20.0  # the most recent samples only


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StageStats(window_s=0)


def test_parked_messages_are_counted_apart_from_failures() -> None:
    stats = StageStats(clock=Clock())
    stats.record(Handled("scan", "parked", 0.004, "ScannerUnavailable", "file.received"))
    stats.record(Handled("scan", "parked", 0.001, None, "file.received"))
    body = stats.snapshot()["stages"]["scan"]  # type: ignore[index]
    assert (body["handled"], body["parked"], body["retried"], body["requeued"]) == (2, 2, 0, 0)
