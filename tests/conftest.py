"""Session fixtures: the real services, started by the project itself; and how the suite runs
on several workers.

``services`` makes RabbitMQ, PostgreSQL, SeaweedFS and clamd healthy through
``shared.devservices.up`` (starting what is missing). If one cannot be had, every test that needs
it fails with the reason; nothing is skipped.

``scripts/test.sh`` runs the suite on two pytest-xdist workers (``-n 2 --dist loadfile``):

- every test module is one unit of work, run whole by one worker, so that a module's own
  database, AMQP prefix and bucket are never used by two workers at once;
- the fault tests (``tests/faults/``), which must not run beside one another, are one unit
  together, run one after the other by one worker: each starts a whole cluster of processes,
  kills or restarts services, or measures time and memory;
- session fixtures run once per worker: ``devservices.up`` serialises its callers with a lock
  file, and names that several modules share carry the worker's name
  (``tests.localenv.worker_name``);
- the fault tests' counts travel from the workers to the controller in their reports'
  ``user_properties``, and are printed at the end of the run ("fault test counts");
- a test that runs past ``timeout`` (pyproject.toml, pytest-timeout) fails with every thread's
  stack; if it used the services, they are checked again before the next test, and a local
  RabbitMQ that stopped answering is restarted (``shared.devservices``).
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from shared import devservices

TEST_BUCKETS = ("sluice-test", "sluice-e2e")
FAULTS = "tests/faults/"
FAULT_COUNTS = "fault test counts"
#: The fault counts of every report this process saw: on the controller, every worker's.
_COUNTS: list[str] = []
#: The order in which units of work are handed to the workers: the longest first, so that the
#: last ones are short and no worker is left alone with a long one at the end.
_FIRST = ("faults", "e2e", "security", "integration", "unit")


@pytest.fixture(scope="session")
def services() -> Iterator[list[devservices.ServiceStatus]]:
    """The healthy local services (see ``sluice services up``)."""
    try:
        statuses = devservices.up(devservices.DevServicesConfig.from_env(), buckets=TEST_BUCKETS)
    except devservices.ServiceStartError as exc:
        pytest.fail(f"a required service is not available: {exc}", pytrace=False)
    yield statuses


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadfile``, the scheduler that keeps each module on one worker and every
    fault test on one worker (:class:`_ModulesAndFaults`); other modes keep pytest-xdist's.

    (pytest-xdist's ``--dist loadgroup`` with ``xdist_group`` marks would say the same, but it
    renames the tests' node ids to do it, which pytest 9.2 no longer lets it do.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class _ModulesAndFaults(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return FAULTS if path.startswith(FAULTS) else path

    config.option.loadscopereorder = False  # hand units out in collection order (see below)
    return _ModulesAndFaults(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker, order the tests so that the units of work are handed out
    longest first: fault tests, e2e, integration, unit (a stable sort: the order within a
    module stays)."""
    if not hasattr(config, "workerinput"):
        return

    def rank(item: pytest.Item) -> int:
        parts = item.path.relative_to(config.rootpath).parts  # ("tests", tier, ..., file)
        tier = parts[1] if len(parts) > 2 else ""
        return _FIRST.index(tier) if tier in _FIRST else len(_FIRST)

    items.sort(key=rank)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Move the counts a fault test recorded (``tests.faults.checks.REPORTS``) into its report,
    which pytest-xdist sends from the worker to the controller."""
    report = yield
    if report.failed and "Timeout (>" in report.longreprtext and "services" in item.fixturenames:
        report.sections.append(("after the timeout", _heal_services()))
    checks = sys.modules.get("tests.faults.checks")
    lines: list[str] = getattr(checks, "REPORTS", [])
    while lines:
        report.user_properties.append((FAULT_COUNTS, lines.pop(0)))
    return report


def _heal_services() -> str:
    """After a test that hung (``timeout`` in pyproject.toml): check the shared services again,
    restarting a wedged RabbitMQ (``devservices.up``), so that one hung broker fails the tests
    that were waiting on it, not every test after them."""
    try:
        statuses = devservices.up(devservices.DevServicesConfig.from_env())
    except devservices.ServiceStartError as exc:
        return f"a service is still not available: {exc}"
    return "; ".join(f"{status.name}: {status.detail}" for status in statuses)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the fault counts of every report, in the process that prints the summary."""
    _COUNTS.extend(str(value) for name, value in report.user_properties if name == FAULT_COUNTS)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the fault tests' counts (accepted, committed, dead-lettered, duplicates)."""
    if _COUNTS:
        terminalreporter.section(FAULT_COUNTS)
        for line in _COUNTS:
            terminalreporter.write_line(line)
