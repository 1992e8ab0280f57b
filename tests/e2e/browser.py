"""Headless Chromium for the page tests (Debian's ``chromium`` + ``chromium-driver``, selenium):
the system browser and driver, nothing downloaded, no background network."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"


def chromium() -> Iterator[WebDriver]:
    """A headless Chromium session (for a fixture: ``yield from chromium()``); quit at the end.
    Fails the test when chromium or its driver is missing or does not start."""
    driver_path = shutil.which("chromedriver")
    if driver_path is None or not Path(CHROMIUM).exists():
        pytest.fail("chromium and chromium-driver are required: run scripts/bootstrap.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        # The machine's network is closed: no background fetches (updates, sync, QUIC probes)
        # to be refused at every start.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1400,1100",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    except WebDriverException as exc:
        pytest.fail(f"headless chromium did not start: {exc.msg}")
    try:
        yield driver
    finally:
        driver.quit()


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """A line in the terminal output, even without ``-s``."""
    with capsys.disabled():
        print(f"\n{line}")


def text_of(driver: WebDriver, element_id: str) -> str:
    """The visible text of the element ``#element_id``."""
    text: str = driver.find_element(By.ID, element_id).text
    return text


def wait_text(
    driver: WebDriver, element_id: str, expected: str, timeout_s: float, *also: str
) -> None:
    """Wait until ``#element_id`` shows ``expected``; the failure quotes what it showed, and
    what the elements ``also`` showed (e.g. the page's error line)."""
    try:
        WebDriverWait(driver, timeout_s).until(lambda d: expected in text_of(d, element_id))
    except Exception:
        shown = "".join(f"; #{other} showed {text_of(driver, other)!r}" for other in also)
        raise AssertionError(
            f"#{element_id} never showed {expected!r}: {text_of(driver, element_id)!r}{shown}"
        ) from None
