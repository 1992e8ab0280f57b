"""Session fixtures: the real services, started by the project itself.

``services`` makes RabbitMQ, PostgreSQL, SeaweedFS and clamd healthy through
``shared.devservices.up`` (starting what is missing). If one cannot be had, every test that needs
it fails with the reason; nothing is skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from shared import devservices

TEST_BUCKETS = ("sluice-test", "sluice-e2e")


@pytest.fixture(scope="session")
def services() -> Iterator[list[devservices.ServiceStatus]]:
    """The healthy local services (see ``sluice services up``)."""
    try:
        statuses = devservices.up(devservices.DevServicesConfig.from_env(), buckets=TEST_BUCKETS)
    except devservices.ServiceStartError as exc:
        pytest.fail(f"a required service is not available: {exc}", pytrace=False)
    yield statuses


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the fault tests' counts (accepted, committed, dead-lettered, duplicates)."""
    checks = sys.modules.get("tests.faults.checks")
    lines: list[str] = getattr(checks, "REPORTS", [])
    if lines:
        terminalreporter.section("fault test counts")
        for line in lines:
            terminalreporter.write_line(line)
