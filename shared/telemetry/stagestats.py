"""What each stage of this process handled over the last minute: a rolling window fed by the run
loop's observer (:func:`shared.telemetry.observers.observe`), served as a worker's ``GET /stats``.

Counts are exact over the window: one bucket of counts per second, so memory is bounded by the
window's length, not by the message rate. Handling times are kept as raw samples (the most
recent :data:`MAX_SAMPLES` per stage within the window), so the percentiles of several workers
can be computed over their merged samples rather than by averaging percentiles, which is
meaningless. At more than ``MAX_SAMPLES / window_s`` messages a second per stage the
percentiles cover the most recent ``MAX_SAMPLES`` messages of the window only.

``/stats`` (contract: ``{"window_s": 60, "stages": {"scan": {"handled": 12, "acked": 11,
"retried": 1, "dead_lettered": 0, "requeued": 0, "parked": 0, "in_flight": 0, "p50_ms": 41.2,
"p95_ms": 88.0, "durations_ms": [...]}}}``), percentiles ``null`` when nothing was handled in the
window. ``parked`` counts messages given back without spending an attempt while the stage's
circuit breaker was open (``shared.runner``); the health server adds each stage's ``breaker``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.telemetry.observers import Handled

#: Handling-time samples kept per stage (about 16 KiB each); counts are never capped.
MAX_SAMPLES = 2048
DEFAULT_WINDOW_S = 60

#: Run-loop outcome → the ``/stats`` counter it adds to (besides ``handled``). ``requeued``
#: (the failure could not be routed; the broker delivers the message again) counts as handled.
_COUNTER_OF_OUTCOME = {
    "acked": "acked",
    "dropped": "acked",  # acked without events: the file was deleted while in flight
    "retry": "retried",
    "dead-lettered": "dead_lettered",
    "parked": "parked",
}
COUNTERS = ("handled", "acked", "retried", "dead_lettered", "requeued", "parked")


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``samples`` by linear interpolation between closest
    ranks (NumPy's default, "linear"); None for no samples.

    Raises:
        ValueError: ``q`` is outside 0..100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not samples:
        return None
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(durations_ms: Sequence[float]) -> tuple[float | None, float | None]:
    """(p50, p95) of ``durations_ms``, rounded to 0.1 ms; (None, None) for no samples."""
    p50, p95 = percentile(durations_ms, 50), percentile(durations_ms, 95)
    return (
        round(p50, 1) if p50 is not None else None,
        round(p95, 1) if p95 is not None else None,
    )


@dataclass
class _StageWindow:
    """One stage's window: per-second count buckets and timestamped handling-time samples."""

    window_s: int
    buckets: deque[tuple[int, dict[str, int]]] = field(default_factory=deque)
    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def add(self, now: float, outcome: str, duration_s: float) -> None:
        second = int(now)
        if not self.buckets or self.buckets[-1][0] != second:
            self.buckets.append((second, dict.fromkeys(COUNTERS, 0)))
        counts = self.buckets[-1][1]
        counts["handled"] += 1
        counts[_COUNTER_OF_OUTCOME.get(outcome, "requeued")] += 1
        self.samples.append((now, duration_s * 1000))
        self.expire(now)

    def expire(self, now: float) -> None:
        oldest_second = int(now) - self.window_s + 1
        while self.buckets and self.buckets[0][0] < oldest_second:
            self.buckets.popleft()
        while self.samples and self.samples[0][0] <= now - self.window_s:
            self.samples.popleft()

    def counts(self) -> dict[str, int]:
        total = dict.fromkeys(COUNTERS, 0)
        for _, counts in self.buckets:
            for name, value in counts.items():
                total[name] += value
        return total


class StageStats:
    """Rolling per-stage counts and handling times of this process (one per worker process).

    Register :meth:`record` with :func:`shared.telemetry.observers.observe`; read with
    :meth:`snapshot`. ``window_s`` is the window's length in whole seconds (counts are bucketed
    per second, so the window is ``window_s`` seconds give or take the current second).
    ``clock`` returns seconds (``time.monotonic``), for tests.
    """

    def __init__(
        self, window_s: int = DEFAULT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_s < 1:
            raise ValueError(f"window_s must be at least 1, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._stages: dict[str, _StageWindow] = {}

    def record(self, handled: Handled) -> None:
        """Count one handled message (the run-loop observer; quick, never raises)."""
        window = self._stages.get(handled.stage)
        if window is None:
            window = self._stages[handled.stage] = _StageWindow(self.window_s)
        window.add(self._clock(), handled.outcome, handled.duration_s)

    def snapshot(
        self, in_flight: Mapping[str, int] | None = None, stages: Iterable[str] = ()
    ) -> dict[str, object]:
        """The ``/stats`` body: the window's length and, per stage, its counts, ``in_flight``
        (from ``in_flight``, messages being handled now), p50/p95 handling time in ms and the
        raw ``durations_ms`` samples. Stages in ``stages`` or ``in_flight`` appear even with
        nothing handled (zeros, null percentiles)."""
        now = self._clock()
        in_flight = in_flight or {}
        body: dict[str, object] = {}
        for name in sorted({*self._stages, *in_flight, *stages}):
            window = self._stages.get(name)
            counts = dict.fromkeys(COUNTERS, 0)
            durations: list[float] = []
            if window is not None:
                window.expire(now)
                counts = window.counts()
                durations = [round(ms, 3) for _, ms in window.samples]
            p50, p95 = summarise(durations)
            body[name] = {
                **counts,
                "in_flight": in_flight.get(name, 0),
                "p50_ms": p50,
                "p95_ms": p95,
                "durations_ms": durations,
            }
        return {"window_s": self.window_s, "stages": body}
