"""The circuit breaker's pure logic (``shared.breaker``): its states, which errors trip it, and
what ``/readyz`` makes of it. Fakes only; the breaker against real clamd, PostgreSQL and S3 is in
``tests/faults/`` (clamd outage, PostgreSQL restart, S3 outage)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from shared.breaker import (
    BreakerState,
    BreakerStatus,
    CircuitBreaker,
    Dependency,
    DependencyName,
    dependency_of,
)
from shared.errors import (
    BrokerUnavailable,
    ChecksumMismatch,
    DatabaseUnavailable,
    InvalidEvent,
    ScannerUnavailable,
    StorageUnavailable,
)
from shared.events import BaseEvent
from shared.stage import Reply, Stage
from shared.telemetry.health import readiness


async def _answers() -> None:
    return None


CLAMD = Dependency(DependencyName.CLAMD, (ScannerUnavailable,), _answers)
POSTGRESQL = Dependency(DependencyName.POSTGRESQL, (DatabaseUnavailable,), _answers)
S3 = Dependency(DependencyName.S3, (StorageUnavailable,), _answers)


class FakeClock:
    """Monotonic seconds and UTC wall time that move only when told."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.start = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.now_s

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.now_s - 100.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("scan", clock=clock.monotonic, wall=clock.wall)


def test_a_new_breaker_is_closed_and_says_nothing(breaker: CircuitBreaker) -> None:
    assert breaker.closed and breaker.state is BreakerState.CLOSED
    assert breaker.dependency is None
    assert breaker.open_for_s() == 0.0
    assert breaker.status() == BreakerStatus(BreakerState.CLOSED)
    assert breaker.status().as_json() == {
        "state": "closed",
        "dependency": None,
        "since": None,
        "probes_failed": 0,
        "last_error": None,
    }


def test_open_probe_fail_probe_answer_close(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.open(CLAMD, ScannerUnavailable("clamd exchange failed: refused"))
    assert breaker.state is BreakerState.OPEN and not breaker.closed
    assert breaker.dependency is CLAMD
    opened = breaker.status()
    assert (opened.dependency, opened.since, opened.probes_failed) == ("clamd", clock.start, 0)
    assert opened.last_error == "ScannerUnavailable: clamd exchange failed: refused"

    clock.now_s += 2
    breaker.probing()
    assert breaker.state is BreakerState.PROBING
    breaker.probe_failed(ScannerUnavailable("clamd PING failed"))
    assert breaker.state is BreakerState.OPEN
    assert breaker.probes_failed == 1
    assert breaker.status().last_error == "ScannerUnavailable: clamd PING failed"
    assert breaker.status().since == clock.start, "since is when it opened, not the last probe"

    clock.now_s += 3
    breaker.probing()
    assert breaker.open_for_s() == 5.0
    assert breaker.close() == 5.0
    assert breaker.closed and breaker.dependency is None
    closed = breaker.status()
    assert (closed.state, closed.dependency, closed.since) == (BreakerState.CLOSED, None, None)
    assert closed.last_error == "ScannerUnavailable: clamd PING failed", "kept for ops"


def test_opening_again_starts_the_count_and_the_time_afresh(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    breaker.open(POSTGRESQL, "first")
    breaker.probing()
    breaker.probe_failed("down")
    breaker.probing()
    breaker.close()
    clock.now_s += 60
    breaker.open(S3, "second")
    status = breaker.status()
    assert (status.dependency, status.probes_failed) == ("s3", 0)
    assert status.since == clock.start + timedelta(seconds=60)
    assert status.as_json()["since"] == "2025-01-02T03:05:05+00:00"


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        ((), "probing"),  # a closed breaker is not probed
        ((), "probe_failed"),
        ((), "close"),
        (("open",), "open"),  # opened twice
        (("open",), "close"),  # closed without a probe that answered
        (("open", "probing"), "probing"),
        (("open", "probing"), "open"),
    ],
)
def test_transitions_that_do_not_apply_are_refused(
    breaker: CircuitBreaker, steps: tuple[str, ...], refused: str
) -> None:
    actions = {
        "open": lambda: breaker.open(CLAMD, "down"),
        "probing": breaker.probing,
        "probe_failed": lambda: breaker.probe_failed("down"),
        "close": breaker.close,
    }
    for step in steps:
        actions[step]()
    before = breaker.state
    with pytest.raises(RuntimeError):
        actions[refused]()
    assert breaker.state is before


def test_long_errors_are_cut(breaker: CircuitBreaker) -> None:
    breaker.open(CLAMD, "x" * 5000)
    assert len(breaker.status().last_error or "") == 1000


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ScannerUnavailable("refused"), CLAMD),
        (DatabaseUnavailable("gone"), POSTGRESQL),
        (StorageUnavailable("503"), S3),
        (BrokerUnavailable("not confirmed"), None),  # the broker has its own reconnects
        (InvalidEvent("bad"), None),
        (ChecksumMismatch("differs"), None),
        (ValueError("a bug"), None),
    ],
)
def test_which_errors_trip_which_dependency(
    error: BaseException, expected: Dependency | None
) -> None:
    assert dependency_of((CLAMD, POSTGRESQL, S3), error) is expected


def test_the_first_declared_dependency_wins_and_none_declared_trips_nothing() -> None:
    both = Dependency(DependencyName.S3, (StorageUnavailable, ScannerUnavailable), _answers)
    assert dependency_of((both, CLAMD), ScannerUnavailable("x")) is both
    assert dependency_of((), StorageUnavailable("x")) is None


async def _handle(event: BaseEvent) -> Reply:
    return []


def test_a_stage_without_dependencies_never_trips() -> None:
    store = Stage("store", _handle)
    assert store.dependencies == ()
    assert store.dependency_of(StorageUnavailable("S3 down")) is None
    scan = Stage("scan", _handle, dependencies=(CLAMD, POSTGRESQL))
    assert scan.dependency_of(DatabaseUnavailable("gone")) is POSTGRESQL


@dataclass
class FakeConsumer:
    """What ``readiness`` reads of a :class:`~shared.runner.StageConsumer`."""

    stage: Stage
    ready: bool
    breaker: BreakerStatus


def test_readyz_names_the_dependency_an_open_breaker_waits_for(clock: FakeClock) -> None:
    breaker = CircuitBreaker("scan", clock=clock.monotonic, wall=clock.wall)
    breaker.open(CLAMD, ScannerUnavailable("refused"))
    consumers = [
        FakeConsumer(Stage("scan", _handle), False, breaker.status()),
        FakeConsumer(Stage("store", _handle), True, BreakerStatus(BreakerState.CLOSED)),
    ]
    status, body = readiness(consumers)  # type: ignore[arg-type]
    assert status == 503
    assert body["stages"] == {"scan": "not_ready", "store": "ready"}
    message = "not ready: scan (breaker open: clamd)"
    assert body["error"] == {"code": "not_ready", "message": message}
    breakers = body["breakers"]
    assert isinstance(breakers, dict)
    assert breakers["scan"]["state"] == "open"
    assert breakers["scan"]["since"] == clock.start.isoformat()
    assert breakers["store"]["state"] == "closed"


def test_readyz_is_200_when_every_breaker_is_closed() -> None:
    consumers = [FakeConsumer(Stage("commit", _handle), True, BreakerStatus(BreakerState.CLOSED))]
    status, body = readiness(consumers)  # type: ignore[arg-type]
    assert status == 200
    assert body["status"] == "ready"
