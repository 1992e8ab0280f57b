"""The /ops page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, selenium)
against a real ``sluice run`` (prefix and database ``t-ops-page``).

The story ops live through: an upstream service publishes ``file.received`` for an object it
has not written yet; the real scan stage dead-letters it (``SourceMissing``). With an
``ops:read`` key the page shows the dead letter with its error and dry-runs it, and its replay
button is disabled (the gateway refuses that key a replay). With an ``ops:admin`` key a dry run
names it and moves nothing; the object is then written (the fix) and the page's replay sends the
message back to the scan stage, which now processes the file to ``available``. Screenshots are
saved under the test's tmp path and their paths printed in the terminal output.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from services.gateway.keys import Scope, create_key
from shared import devservices
from shared.adapters import broker, db
from shared.events import FileReceived
from shared.settings import AmqpSettings, DatabaseSettings
from shared.topology import Topology
from tests.e2e.browser import chromium, report, text_of
from tests.e2e.browser import wait_text as wait_text_within
from tests.e2e.pipeline import Pipeline, free_port, queue_depths, start_pipeline

pytestmark = pytest.mark.e2e

NAME = "t-ops-page"
WAIT_S = 30


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """``sluice run`` with its workers' health server on, so the gateway (same process) reads
    their ``/stats`` for the handled counts and handling times."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLUICE_WORKER_HEALTH_PORT", str(free_port()))
        yield from start_pipeline(tmp_path_factory.mktemp("ops-page"), NAME)


@pytest.fixture(scope="module")
def ops_keys(pipeline: Pipeline) -> dict[Scope, str]:
    """An ``ops:read`` and an ``ops:admin`` key, by scope."""

    async def create() -> dict[Scope, str]:
        pool = await db.create_pool(DatabaseSettings(url=pipeline.database_url))
        try:
            return {
                "ops:read": await create_key(pool, "day-watch", "ops:read"),
                "ops:admin": await create_key(pool, "night-shift", "ops:admin"),
            }
        finally:
            await pool.close()

    return asyncio.run(create())


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    yield from chromium()


def publish(prefix: str, event: FileReceived) -> None:
    """Publish ``event`` as an upstream service does (publisher confirm, mandatory)."""

    async def main() -> None:
        amqp = AmqpSettings(prefix=prefix)
        connection = await broker.connect(amqp)
        async with connection:
            publisher = await broker.Publisher.create(connection, amqp, Topology.of(amqp))
            await publisher.publish(event)

    asyncio.run(main())


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


def use_key(driver: WebDriver, key: str) -> None:
    driver.find_element(By.ID, "ops-key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


#: The visible text of every row of a table, read in one script: the page redraws its tables
#: every few seconds, so element-by-element reads could meet rows already replaced.
_TABLE_ROWS = """
return Array.from(document.querySelectorAll(arguments[0] + " tbody tr")).map(
    (row) => Array.from(row.querySelectorAll("th, td")).map((cell) => cell.innerText.trim()));
"""


def table_rows(driver: WebDriver, table_id: str) -> list[list[str]]:
    rows: list[list[str]] = driver.execute_script(_TABLE_ROWS, f"#{table_id}")
    return rows


def dead_letter_row(driver: WebDriver, file_id: str) -> list[str]:
    for cells in table_rows(driver, "dead-letters"):
        if file_id in cells:
            return cells
    return []


def stage_cells(driver: WebDriver, stage: str) -> list[str]:
    """The ``td`` cells of ``stage``'s row (its ``th`` name left out)."""
    for cells in table_rows(driver, "stages"):
        if cells and cells[0] == stage:
            return cells[1:]
    return []


def test_the_page_shows_a_dead_letter_dry_runs_and_replays_it(
    pipeline: Pipeline,
    ops_keys: dict[Scope, str],
    browser: WebDriver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = png()
    upstream = f"{pipeline.bucket}-upstream"
    key = f"incoming/{uuid.uuid4()}.png"
    event = FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source=f"s3://{upstream}/{key}",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/png",
        original_name="late.png",
        kind="upstream",
    )
    file_id = str(event.file_id)
    publish(pipeline.prefix, event)  # the object is not written yet
    dlq = f"{pipeline.prefix}.scan.dlq"
    deadline = time.monotonic() + WAIT_S
    while queue_depths(pipeline)[dlq] != 1:
        assert time.monotonic() < deadline, f"not dead-lettered; log: {pipeline.log_path}"
        time.sleep(0.2)

    browser.get(f"{pipeline.url}/ops")
    assert browser.title == "Sluice ops"
    use_key(browser, pipeline.keys["alice"])  # an upload key: refused, and not kept
    wait_text(browser, "error", "HTTP 403 forbidden: this is an upload key")
    assert browser.execute_script("return sessionStorage.length") == 0
    refused = [entry["message"] for entry in browser.get_log("browser")]  # read and cleared
    assert any("/ops/api/whoami" in line and "403" in line for line in refused), refused

    use_key(browser, ops_keys["ops:read"])  # reads everything; the replay button is disabled
    WebDriverWait(browser, WAIT_S).until(lambda d: dead_letter_row(d, file_id))
    wait_text(browser, "notice", "Read-only key (ops:read) of day-watch")
    replay_button = browser.find_element(By.ID, "replay")
    assert not replay_button.is_enabled()
    assert replay_button.get_attribute("title") == "Replay needs an ops:admin key."
    browser.find_element(By.ID, "dry-run").click()  # a dry run changes nothing: allowed
    wait_text(browser, "result-title", "Dry run: 1 dead letter(s) would be replayed")
    # Were the button enabled, the gateway would refuse: 403, and the key kept for reading.
    browser.execute_script("document.getElementById('replay').disabled = false")
    replay_button.click()
    WebDriverWait(browser, WAIT_S).until(expected_conditions.alert_is_present())
    browser.switch_to.alert.accept()
    wait_text(browser, "error", "HTTP 403 forbidden: this is an ops:read key")
    assert browser.execute_script("return sessionStorage.length") == 1
    assert queue_depths(pipeline)[dlq] == 1
    read_only_png = tmp_path / "ops-page-read-only.png"
    assert browser.save_screenshot(str(read_only_png))
    report(capsys, f"ops page screenshot (ops:read key): {read_only_png}")
    browser.get_log("browser")  # the refused replay's 403 logged: read and cleared

    use_key(browser, ops_keys["ops:admin"])
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.ID, "replay").is_enabled())
    WebDriverWait(browser, WAIT_S).until(lambda d: dead_letter_row(d, file_id))

    row = dead_letter_row(browser, file_id)
    stage, _, owner, event_type, error_type, message = row[:6]
    assert (stage, owner, event_type, error_type) == (
        "scan",
        "alice",
        "file.received",
        "SourceMissing",
    )
    assert message.startswith("source object is gone")
    # The dead letters column (RabbitMQ's statistics lag up to 5 s; the page refreshes).
    WebDriverWait(browser, WAIT_S).until(lambda d: stage_cells(d, "scan")[5] == "1")
    assert text_of(browser, "error") == ""
    # The page redraws the table as it refreshes: a row found just before may be gone by the
    # click (StaleElementReferenceException), so find and click again until one lands.
    WebDriverWait(browser, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#dead-letters tbody tr button").click() or True
    )
    wait_text(browser, "detail-body", '"x-sluice-error-type": "SourceMissing"')
    assert f'"file_id": "{file_id}"' in text_of(browser, "detail-body")

    browser.find_element(By.ID, "dry-run").click()
    wait_text(browser, "result-title", "Dry run: 1 dead letter(s) would be replayed")
    assert file_id in text_of(browser, "result-list")
    assert "SourceMissing" in text_of(browser, "result-list")
    assert queue_depths(pipeline)[dlq] == 1
    dry_run_png = tmp_path / "ops-page-dry-run.png"
    assert browser.save_screenshot(str(dry_run_png))
    report(capsys, f"ops page screenshot (dry run): {dry_run_png}")

    devservices.s3_client().put_object(Bucket=upstream, Key=key, Body=data)  # the fix
    browser.find_element(By.ID, "replay").click()
    WebDriverWait(browser, WAIT_S).until(expected_conditions.alert_is_present())
    confirm = browser.switch_to.alert
    assert "Replay up to 100 dead letter(s) in every stage?" in confirm.text
    confirm.accept()
    wait_text(browser, "result-title", "Replayed 1 dead letter(s)")

    info: dict[str, Any] = pipeline.wait_final(file_id)
    assert info["status"] == "available"
    assert queue_depths(pipeline)[dlq] == 0
    types = [entry["type"] for entry in info["history"]]
    assert types.count("file.scanned") == 1 and types.count("file.stored") == 1, types
    wait_text(browser, "dlq-caption", "0 dead letter(s)")
    assert not browser.find_element(By.ID, "detail").is_displayed()  # no stale detail
    # scan handled it twice within the minute: the failure, then the replay; both timed.
    WebDriverWait(browser, WAIT_S).until(lambda d: stage_cells(d, "scan")[8] == "2")
    p50_ms, p95_ms = (float(value) for value in stage_cells(browser, "scan")[9:11])
    assert 0 < p50_ms <= p95_ms
    replayed_png = tmp_path / "ops-page-replayed.png"
    assert browser.save_screenshot(str(replayed_png))
    report(capsys, f"ops page screenshot (after replay): {replayed_png}")
    severe = [
        entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
    ]
    assert severe == [], severe  # no script error, no blocked (external) fetch


def wait_text(driver: WebDriver, element_id: str, expected: str) -> None:
    wait_text_within(driver, element_id, expected, WAIT_S, "error")
