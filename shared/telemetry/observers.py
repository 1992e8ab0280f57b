"""What the run loop reports after each message: a :class:`Handled` outcome, given to every
observer registered with :func:`observe` in this process.

The observers are the process's telemetry: the Prometheus message counters and handling-time
histogram (``shared.telemetry.metrics``) and the last minute per stage that a worker serves as
``GET /stats`` (``shared.telemetry.stagestats``). The run loop (``shared.runner``) calls
:func:`report` once per message, after its outcome is settled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("sluice.runner")


@dataclass(frozen=True)
class Handled:
    """One message's outcome, as the run loop reports it to observers (metrics, status).

    ``outcome`` is ``acked`` (handled, events published), ``retry`` (sent to the wait queue),
    ``dead-lettered``, ``requeued`` (given back to the broker: routing the failure failed),
    ``parked`` (given back while a dependency is down) or ``dropped`` (acked without events:
    the file was deleted while in flight and its source is gone).
    ``error_type`` is the exception's class name (or the reason of a handler's refusal,
    ``shared.stage.Refusal``), None when acked. ``duration_s`` is the handling time in seconds.
    """

    stage: str
    outcome: str
    duration_s: float
    error_type: str | None
    event_type: str | None


Observer = Callable[[Handled], None]
_observers: list[Observer] = []


def observe(observer: Observer) -> None:
    """Call ``observer`` after every message any stage consumer of this process handles.

    Observers run on the event loop and must be quick and never raise (an exception is
    logged and ignored). Registering the same observer twice calls it once.
    """
    if observer not in _observers:
        _observers.append(observer)


def report(handled: Handled) -> None:
    """Give ``handled`` to every registered observer, in registration order."""
    for observer in _observers:
        try:
            observer(handled)
        except Exception as exc:
            log.error("observer failed", observer=repr(observer), error=repr(exc))
