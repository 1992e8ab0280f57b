"""A stage's circuit breaker: attempts are for the message, not for the world.

A failure is either the message's (it is bad, or hit a fault of its own: counted in
``x-sluice-attempts``, then dead-lettered, ``shared.retry``) or a dependency's (clamd,
PostgreSQL or S3 does not answer at all). A stage names the second kind in its
:attr:`~shared.stage.Stage.dependencies`: which error types may mean that a :class:`Dependency`
is down, and how to probe it (clamd ``PING``, PostgreSQL ``SELECT 1``, S3 ``HeadBucket``).

The run loop (``shared.runner``) decides with the probe, so a per-message fault that happens to
share a dependency's error type (clamd's ``INSTREAM size limit exceeded``, a statement timeout
on one row) still spends the message's attempts:

- a handler raises an error the stage's dependencies name, the breaker is closed: the run loop
  probes that dependency once. It answers → the failure is the message's (retried as usual).
  It does not → the breaker **opens** (:meth:`CircuitBreaker.open`);
- while the breaker is open the stage's consumer is cancelled (no new deliveries), and every
  message in flight is given back without spending an attempt; the dependency is probed with
  equal-jitter exponential backoff (``shared.retry.backoff_delay_s``), the breaker being
  **probing** during each probe;
- the probe answers → the breaker **closes** and the consumer is registered again.

::

    closed ──(probe after a dependency error fails)──► open ──(backoff)──► probing
      ▲                                                 ▲                     │
      │                                                 └────(probe fails)────┤
      └────────────────────────────(probe answers)────────────────────────────┘

:class:`CircuitBreaker` is the state machine alone (no I/O, a clock given), so it is tested with
fakes; ``shared.runner.StageConsumer`` drives it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.retry import ERROR_MESSAGE_CHARS, shorten


class BreakerState(StrEnum):
    """Where a stage's breaker is: taking deliveries, or waiting for a dependency."""

    CLOSED = "closed"
    OPEN = "open"
    PROBING = "probing"


class DependencyName(StrEnum):
    """The dependencies a stage's breaker may wait for (label ``dependency`` of
    ``sluice_dependency_up``)."""

    CLAMD = "clamd"
    POSTGRESQL = "postgresql"
    S3 = "s3"


#: A probe: returns once the dependency answers; raises (anything) when it does not.
Probe = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Dependency:
    """A dependency a stage cannot work without, and how to tell that it is back.

    ``trips_on`` are the error types a handler raises when ``name`` may be down (e.g.
    :class:`~shared.errors.ScannerUnavailable` for clamd); ``probe`` asks it something cheap
    and raises when it does not answer (the run loop bounds it with
    ``SLUICE_BREAKER_PROBE_TIMEOUT_S``).
    """

    name: DependencyName
    trips_on: tuple[type[BaseException], ...]
    probe: Probe

    def trips(self, exc: BaseException) -> bool:
        """Whether ``exc`` may mean this dependency is down."""
        return isinstance(exc, self.trips_on)


def dependency_of(dependencies: Sequence[Dependency], exc: BaseException) -> Dependency | None:
    """The first of ``dependencies`` that ``exc`` may be the outage of; None: the failure is
    the message's alone."""
    for dependency in dependencies:
        if dependency.trips(exc):
            return dependency
    return None


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker at one moment: ``state``; while not closed, the ``dependency`` it waits for,
    since when (``since``, UTC), the probes failed so far and the last error seen."""

    state: BreakerState
    dependency: str | None = None
    since: datetime | None = None
    probes_failed: int = 0
    last_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """``{"state": "open", "dependency": "clamd", "since": iso or null, "probes_failed": 3,
        "last_error": "..."}`` (``/readyz``, ``/stats``)."""
        return {
            "state": self.state.value,
            "dependency": self.dependency,
            "since": self.since.isoformat() if self.since else None,
            "probes_failed": self.probes_failed,
            "last_error": self.last_error,
        }


class CircuitBreaker:
    """One stage's breaker (pure state, no I/O).

    ``clock`` gives monotonic seconds (``time.monotonic``) and ``wall`` UTC datetimes, for
    tests. Transitions that do not apply (closing a closed breaker, opening an open one) are
    refused with ``RuntimeError``: the run loop never makes them.
    """

    def __init__(
        self,
        stage: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.stage = stage
        self._clock = clock
        self._wall = wall
        self._state = BreakerState.CLOSED
        self._dependency: Dependency | None = None
        self._opened_at = 0.0
        self._since: datetime | None = None
        self._probes_failed = 0
        self._last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        """The current state."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether the stage takes deliveries."""
        return self._state is BreakerState.CLOSED

    @property
    def dependency(self) -> Dependency | None:
        """The dependency the breaker waits for; None while closed."""
        return self._dependency

    @property
    def probes_failed(self) -> int:
        """Probes that failed since the breaker opened (the backoff's attempt number)."""
        return self._probes_failed

    def open(self, dependency: Dependency, error: BaseException | str) -> None:
        """Closed → open: ``dependency`` did not answer its probe after ``error``.

        Raises:
            RuntimeError: the breaker is not closed.
        """
        if self._state is not BreakerState.CLOSED:
            raise RuntimeError(f"breaker of {self.stage} is already {self._state}")
        self._state = BreakerState.OPEN
        self._dependency = dependency
        self._opened_at = self._clock()
        self._since = self._wall()
        self._probes_failed = 0
        self._last_error = _describe(error)

    def probing(self) -> None:
        """Open → probing (a probe is under way).

        Raises:
            RuntimeError: the breaker is not open.
        """
        if self._state is not BreakerState.OPEN:
            raise RuntimeError(f"breaker of {self.stage} is {self._state}, not open")
        self._state = BreakerState.PROBING

    def probe_failed(self, error: BaseException | str) -> None:
        """Probing → open: the probe did not answer (``error``).

        Raises:
            RuntimeError: no probe is under way.
        """
        if self._state is not BreakerState.PROBING:
            raise RuntimeError(f"breaker of {self.stage} is {self._state}, not probing")
        self._state = BreakerState.OPEN
        self._probes_failed += 1
        self._last_error = _describe(error)

    def close(self) -> float:
        """Probing → closed: the probe answered. Returns how long the breaker was not closed,
        seconds.

        Raises:
            RuntimeError: no probe is under way.
        """
        if self._state is not BreakerState.PROBING:
            raise RuntimeError(f"breaker of {self.stage} is {self._state}, not probing")
        self._state = BreakerState.CLOSED
        self._dependency = None
        self._since = None
        return self._clock() - self._opened_at

    def open_for_s(self) -> float:
        """Seconds since the breaker opened; 0 while closed."""
        return 0.0 if self.closed else self._clock() - self._opened_at

    def status(self) -> BreakerStatus:
        """The breaker now (``last_error`` is kept after closing, for ops)."""
        if self.closed:
            return BreakerStatus(BreakerState.CLOSED, last_error=self._last_error)
        assert self._dependency is not None
        return BreakerStatus(
            self._state,
            self._dependency.name.value,
            self._since,
            self._probes_failed,
            self._last_error,
        )


def _describe(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else (str(error) or repr(error))
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {text}"
    return shorten(text, ERROR_MESSAGE_CHARS)
