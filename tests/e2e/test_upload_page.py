"""The /upload page in headless Chromium (selenium) against a real ``sluice run`` (prefix and
database ``t-upload-page``): files chosen in the page go over tus to the gateway, through every
stage, and the page shows each stage, the final status and the thumbnails; an infected file, a
refused key and a refused type are shown with the gateway's reason. Screenshots are saved under
the test's tmp path and their paths printed in the terminal output.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from shared.settings import S3Settings
from tests.e2e.browser import chromium, report, text_of
from tests.e2e.browser import wait_text as wait_text_within
from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline

pytestmark = pytest.mark.e2e

NAME = "t-upload-page"
WAIT_S = 60
MiB = 1024 * 1024
STAGES = ["received", "scanned", "stored", "thumbnailed", "committed"]


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp_path_factory.mktemp("upload-page"), NAME)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One Chromium for the module; each test opens the page afresh with empty storage."""
    yield from chromium()


@pytest.fixture
def page(pipeline: Pipeline, browser: WebDriver) -> WebDriver:
    """The upload page, opened with nothing in the tab's storage."""
    browser.get(f"{pipeline.url}/upload")
    browser.execute_script("sessionStorage.clear(); localStorage.clear();")
    browser.refresh()
    assert browser.title == "Sluice upload"
    browser.get_log("browser")  # start each test with an empty console
    return browser


def use_key(driver: WebDriver, key: str) -> None:
    driver.find_element(By.ID, "api-key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


def choose(driver: WebDriver, *paths: Path) -> None:
    """Choose ``paths`` in the page's file picker, as a user would."""
    driver.find_element(By.ID, "files").send_keys("\n".join(str(path) for path in paths))


#: What the page shows for each upload, read in one script.
_ITEMS = """
return Array.from(document.querySelectorAll("#uploads > li")).map((li) => {
  const img = li.querySelector(".thumb img");
  const bar = li.querySelector("progress");
  return {
    name: li.dataset.name,
    state: li.dataset.state,
    file_id: li.dataset.fileId || null,
    version: li.dataset.version ? Number(li.dataset.version) : null,
    file_id_text: li.querySelector(".file-id").innerText.trim(),
    status: li.querySelector(".status").innerText.trim(),
    done: Array.from(li.querySelectorAll(".stages li.done")).map((s) => s.dataset.stage),
    notes: Array.from(li.querySelectorAll(".notes li")).map((n) => n.innerText.trim()),
    bytes: [bar.value, bar.max],
    thumb_shown: !li.querySelector(".thumb").hidden,
    thumb_src: img.getAttribute("src"),
    thumb_loaded: img.complete && img.naturalWidth > 0,
    thumb_width: img.naturalWidth,
  };
});
"""


def items(driver: WebDriver) -> dict[str, dict[str, Any]]:
    """The page's uploads by file name."""
    rows: list[dict[str, Any]] = driver.execute_script(_ITEMS)
    return {row["name"]: row for row in rows}


def wait_items(
    driver: WebDriver, names: set[str], finished: set[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Wait until every upload in ``names`` is in a state of ``finished`` and its thumbnail,
    if shown, has loaded."""
    finished = finished or {"available", "rejected", "error"}

    def ready(d: WebDriver) -> bool:
        shown = items(d)
        return names <= shown.keys() and all(
            shown[name]["state"] in finished
            and (not shown[name]["thumb_shown"] or shown[name]["thumb_loaded"])
            for name in names
        )

    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(ready)
    except Exception:
        raise AssertionError(
            f"uploads not finished: {items(driver)}; error shown: {text_of(driver, 'error')!r}"
        ) from None
    return items(driver)


def resources(driver: WebDriver) -> list[dict[str, str]]:
    """Every resource the page loaded (Resource Timing): URL and initiator type."""
    entries: list[dict[str, str]] = driver.execute_script(
        "return [...performance.getEntriesByType('navigation'),"
        " ...performance.getEntriesByType('resource')]"
        ".map((e) => ({name: e.name, initiator: e.initiatorType || 'navigation'}))"
    )
    return entries


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_photos_and_a_pdf_reach_committed_with_their_thumbnails(
    pipeline: Pipeline, page: WebDriver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = [ROOT / "samples" / name for name in ("photo.png", "photo-rotated.jpg")]
    samples.append(ROOT / "samples/document.pdf")
    use_key(page, pipeline.keys["alice"])
    wait_text(page, "notice", "Key accepted")
    assert page.execute_script("return sessionStorage.length") == 1
    choose(page, *samples)

    shown = wait_items(page, {path.name for path in samples})
    with pipeline.client() as client:
        for path in samples:
            item = shown[path.name]
            assert item["state"] == "available", item
            assert item["status"] == "available", item
            assert item["done"] == STAGES, item
            assert item["bytes"] == [path.stat().st_size] * 2, item
            info = client.get(f"/v1/files/{item['file_id']}").json()
            assert info["status"] == "available"
            assert info["original_name"] == path.name
            assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for name in ("photo.png", "photo-rotated.jpg"):
        assert shown[name]["thumb_shown"] and shown[name]["thumb_loaded"], shown[name]
        assert shown[name]["thumb_width"] > 0
        assert origin(shown[name]["thumb_src"]) == S3Settings().endpoint  # a presigned URL
    assert not shown["document.pdf"]["thumb_shown"], shown["document.pdf"]
    assert text_of(page, "error") == ""

    # What the page loaded: its own files and API, and the thumbnails from S3; nothing else.
    loaded = resources(page)
    others = [e for e in loaded if origin(e["name"]) != pipeline.url]
    assert others and all(
        e["initiator"] == "img" and origin(e["name"]) == S3Settings().endpoint for e in others
    ), others
    own = {urlsplit(e["name"]).path for e in loaded}
    scripts = {"/upload/static/tus.min.js", "/upload/static/sse.js", "/upload/static/upload.js"}
    assert scripts | {"/v1/uploads/"} <= own
    screenshot = tmp_path / "upload-page.png"
    assert page.save_screenshot(str(screenshot))
    report(capsys, f"upload page screenshot: {screenshot}")
    severe = [entry["message"] for entry in page.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], severe  # no script error, no blocked load


def test_an_infected_file_is_shown_rejected_with_its_reason(
    pipeline: Pipeline, page: WebDriver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    use_key(page, pipeline.keys["alice"])
    wait_text(page, "notice", "Key accepted")
    choose(page, ROOT / "samples/eicar.pdf")

    item = wait_items(page, {"eicar.pdf"})["eicar.pdf"]
    assert item["state"] == "rejected", item
    assert item["status"].startswith("rejected: infected: Eicar-Test-Signature"), item
    assert item["done"] == ["received", "committed"], item
    assert not item["thumb_shown"]
    screenshot = tmp_path / "upload-page-infected.png"
    assert page.save_screenshot(str(screenshot))
    report(capsys, f"upload page screenshot (infected): {screenshot}")


def test_a_bad_key_is_refused_plainly_and_nothing_is_uploaded(
    pipeline: Pipeline, page: WebDriver
) -> None:
    tus_area = pipeline.spool_dir / ".tus"  # one directory per upload, kept until expiry
    uploads_before = set(tus_area.glob("*"))
    use_key(page, "slk_this-is-not-a-key")
    wait_text(page, "error", "Key refused: HTTP 401 unauthorized")
    assert page.execute_script("return sessionStorage.length") == 0
    choose(page, ROOT / "samples/photo.webp")
    wait_text(page, "error", "Enter an API key first: nothing was uploaded.")
    assert items(page) == {}

    # A key that stops working between the check and the upload (revoked): the tus creation is
    # refused, shown, the key forgotten, and no upload exists.
    page.execute_script("sessionStorage.setItem('sluice.apiKey', 'slk_revoked-meanwhile')")
    choose(page, ROOT / "samples/photo.webp")
    item = wait_items(page, {"photo.webp"})["photo.webp"]
    assert item["state"] == "error", item
    assert item["status"].startswith("upload refused: HTTP 401 unauthorized"), item
    assert item["file_id"] is None and item["done"] == [], item
    wait_text(page, "error", "Enter a valid key")
    assert page.execute_script("return sessionStorage.length") == 0
    uploads = [urlsplit(e["name"]).path for e in resources(page) if "/v1/uploads/" in e["name"]]
    assert uploads == ["/v1/uploads/"], uploads  # the refused creation, never a PATCH
    assert set(tus_area.glob("*")) == uploads_before
    with pipeline.client() as client:
        names = [f["original_name"] for f in client.get("/v1/files").json()["files"]]
    assert "photo.webp" not in names


def test_a_type_the_policy_refuses_is_shown_with_the_gateways_message(
    pipeline: Pipeline, page: WebDriver, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    use_key(page, pipeline.keys["alice"])
    wait_text(page, "notice", "Key accepted")
    choose(page, notes)
    item = wait_items(page, {"notes.txt"})["notes.txt"]
    assert item["status"].startswith("upload refused: HTTP 415 unsupported_type: "), item
    assert ".txt" in item["status"], item
    assert page.execute_script("return sessionStorage.length") == 1  # the key is still good


def test_the_page_has_a_strict_csp_and_names_no_other_origin(pipeline: Pipeline) -> None:
    answer = httpx.get(f"{pipeline.url}/upload")
    assert answer.status_code == 200
    policy = dict(
        part.strip().split(" ", 1) for part in answer.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["img-src"] == f"'self' {S3Settings().endpoint}"  # the presigned thumbnails
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.findall(r"""(?:src|href)=["'](?:https?:)?//""", answer.text)
    for name in ("tus.min.js", "sse.js", "upload.js", "upload.css"):
        asset = httpx.get(f"{pipeline.url}/upload/static/{name}")
        assert asset.status_code == 200 and asset.content, name
    assert httpx.get(f"{pipeline.url}/upload/static/..%2Fupload_page.py").status_code == 404


def noise_png(path: Path) -> Path:
    """A PNG of random pixels, about 9 MiB (two tus chunks; under the 10 MiB photo limit)."""
    Image.frombytes("RGB", (1800, 1700), os.urandom(1800 * 1700 * 3)).save(path, compress_level=1)
    assert 5 * MiB < path.stat().st_size < 10 * MiB
    return path


def test_an_upload_cut_by_a_page_reload_resumes_from_the_servers_offset(
    pipeline: Pipeline, page: WebDriver, tmp_path: Path
) -> None:
    big = noise_png(tmp_path / "noise.png")
    use_key(page, pipeline.keys["alice"])
    wait_text(page, "notice", "Key accepted")
    # 2 MiB/s up: the second chunk takes about 2 s, time to reload the page during it.
    page.set_network_conditions(
        offline=False, latency=0, download_throughput=64 * MiB, upload_throughput=2 * MiB
    )
    try:
        choose(page, big)
        WebDriverWait(page, WAIT_S, poll_frequency=0.05).until(
            lambda d: items(d)["noise.png"]["bytes"][0] > 5.5 * MiB
        )  # the first chunk is acknowledged, the second under way
        page.refresh()
    finally:
        page.delete_network_conditions()
    stored: list[str] = page.execute_script(
        "return Object.keys(localStorage).filter((k) => k.startsWith('tus::'))"
        ".map((k) => JSON.parse(localStorage.getItem(k)).uploadUrl)"
    )
    assert len(stored) == 1, stored  # the unfinished upload, remembered for resuming
    offsets = []
    with pipeline.client() as client:  # the server keeps what the cut chunk brought, once it
        for _ in range(50):  # has seen the connection go: wait for the offset to settle
            head = client.head(stored[0], headers={"Tus-Resumable": "1.0.0"})
            assert head.status_code == 200
            offsets.append(int(head.headers["Upload-Offset"]))
            if offsets[-2:] == [offsets[-1]] * 2:
                break
            time.sleep(0.2)
    assert 5 * MiB <= offsets[-1] < big.stat().st_size, offsets  # the first chunk and more

    wait_text(page, "notice", "Using the key kept in this tab")
    wait_text(page, "unfinished", "Unfinished uploads in this browser: noise.png.")
    choose(page, big)  # the same file again
    item = wait_items(page, {"noise.png"})["noise.png"]
    assert item["state"] == "available", item
    assert "resuming an earlier upload of this file" in item["notes"], item
    assert item["done"] == STAGES and item["thumb_loaded"], item
    sent_after_reload = {urlsplit(e["name"]).path for e in resources(page)}
    assert "/v1/uploads/" not in sent_after_reload  # no new upload was created
    assert urlsplit(stored[0]).path in sent_after_reload
    with pipeline.client() as client:
        info = client.get(f"/v1/files/{item['file_id']}").json()
    assert info["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert page.execute_script("return localStorage.length") == 0  # forgotten once complete


#: Wraps the page's ``fetch``: records each event-stream request's ``Last-Event-ID`` and cuts
#: the first stream after its first message, as a dropped connection would.
_CUT_FIRST_STREAM = """
const realFetch = window.fetch;
window.eventRequests = [];
window.fetch = async (url, options) => {
  const response = await realFetch(url, options);
  if (!String(url).endsWith("/events")) {
    return response;
  }
  window.eventRequests.push((options.headers || {})["Last-Event-ID"] || null);
  if (window.eventRequests.length > 1) {
    return response;
  }
  let seen = "";
  const cut = new TransformStream({
    transform(chunk, controller) {
      seen += new TextDecoder().decode(chunk);
      const end = seen.indexOf("\\n\\n");
      if (end >= 0) {
        controller.enqueue(new TextEncoder().encode(seen.slice(0, end + 2)));
        controller.error(new TypeError("network error"));
      }
    },
  });
  return new Response(response.body.pipeThrough(cut), {
    status: response.status,
    headers: response.headers,
  });
};
"""


def test_a_cut_event_stream_is_resumed_with_last_event_id(
    pipeline: Pipeline, page: WebDriver
) -> None:
    use_key(page, pipeline.keys["alice"])
    wait_text(page, "notice", "Key accepted")
    page.execute_script(_CUT_FIRST_STREAM)
    choose(page, ROOT / "samples/photo.webp")
    item = wait_items(page, {"photo.webp"})["photo.webp"]
    assert item["state"] == "available", item
    assert item["done"] == STAGES and item["notes"] == [], item
    # Cut after event 1, the page asked again from there, and got the rest.
    assert page.execute_script("return window.eventRequests") == [None, "1"]


#: Drops a PNG drawn in the page (a canvas) on the drop zone, as a drag from the desktop would.
_DROP_PNG = """
const done = arguments[arguments.length - 1];
const canvas = document.createElement("canvas");
canvas.width = 120;
canvas.height = 80;
const context = canvas.getContext("2d");
context.fillStyle = "#3a7";
context.fillRect(0, 0, 120, 80);
canvas.toBlob((blob) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], "dropped.png", { type: "image/png" }));
  const zone = document.getElementById("drop-zone");
  zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true }));
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
  done();
}, "image/png");
"""


def test_a_file_dropped_on_the_page_is_uploaded(pipeline: Pipeline, page: WebDriver) -> None:
    use_key(page, pipeline.keys["alice"])
    wait_text(page, "notice", "Key accepted")
    page.execute_async_script(_DROP_PNG)
    item = wait_items(page, {"dropped.png"})["dropped.png"]
    assert item["state"] == "available", item
    assert item["thumb_loaded"], item
    with pipeline.client() as client:
        info = client.get(f"/v1/files/{item['file_id']}").json()
    assert (info["original_name"], info["content_type"]) == ("dropped.png", "image/png")


def test_the_page_is_usable_from_the_keyboard_with_a_visible_focus(
    pipeline: Pipeline, page: WebDriver
) -> None:
    field = page.find_element(By.ID, "api-key")
    field.click()
    field.send_keys(pipeline.keys["alice"] + Keys.ENTER)  # Enter submits the key
    wait_text(page, "notice", "Key accepted")
    focus = page.switch_to.active_element
    for _ in range(3):  # Use key, Forget key, then the file picker
        focus.send_keys(Keys.TAB)
        focus = page.switch_to.active_element
    assert focus.get_attribute("id") == "files"
    assert page.execute_script("return getComputedStyle(document.activeElement).outlineStyle") == (
        "solid"
    )
    label = page.find_element(By.CSS_SELECTOR, "label[for=files]").text
    assert label == "Choose files to upload, or drop them here"


#: Wraps the page's ``fetch``: event streams lose their ``file.stored`` message, as when that
#: event reaches the commit stage late (a retry) and is recorded after ``file.committed``.
_DROP_STORED = """
const realFetch = window.fetch;
window.fetch = async (url, options) => {
  const response = await realFetch(url, options);
  if (!String(url).endsWith("/events")) {
    return response;
  }
  let pending = "";
  const drop = new TransformStream({
    transform(chunk, controller) {
      pending += new TextDecoder().decode(chunk);
      let end;
      while ((end = pending.indexOf("\\n\\n")) >= 0) {
        const message = pending.slice(0, end + 2);
        pending = pending.slice(end + 2);
        if (!message.includes("event: file.stored\\n")) {
          controller.enqueue(new TextEncoder().encode(message));
        }
      }
    },
  });
  return new Response(response.body.pipeThrough(drop), {
    status: response.status,
    headers: response.headers,
  });
};
"""


def test_a_stage_the_stream_did_not_show_is_taken_from_the_files_history(
    pipeline: Pipeline, page: WebDriver
) -> None:
    use_key(page, pipeline.keys["alice"])
    wait_text(page, "notice", "Key accepted")
    page.execute_script(_DROP_STORED)
    choose(page, ROOT / "samples/photo-rotated.jpg")
    item = wait_items(page, {"photo-rotated.jpg"})["photo-rotated.jpg"]
    assert item["state"] == "available", item
    assert item["done"] == STAGES, item


def test_a_file_chosen_with_a_file_id_becomes_that_files_next_version(
    pipeline: Pipeline, page: WebDriver
) -> None:
    """The version field: the files chosen with one of the owner's file ids become its next
    versions (tus ``file_id`` metadata), followed through their own stages, not the earlier
    version's; a value that is not a file id uploads nothing; another owner's file is refused
    with the gateway's message."""
    use_key(page, pipeline.keys["alice"])
    wait_text(page, "notice", "Key accepted")
    choose(page, ROOT / "samples/photo.png")
    first = wait_items(page, {"photo.png"})["photo.png"]
    assert first["state"] == "available", first
    file_id = first["file_id"]

    field = page.find_element(By.ID, "version-of")
    field.send_keys("not-a-file-id")
    choose(page, ROOT / "samples/photo-rotated.jpg")
    wait_text(page, "error", "is not a file id")
    assert set(items(page)) == {"photo.png"}  # nothing uploaded

    field.clear()
    field.send_keys(file_id)
    choose(page, ROOT / "samples/photo-rotated.jpg")
    second = wait_items(page, {"photo-rotated.jpg"})["photo-rotated.jpg"]
    assert second["state"] == "available", second
    assert (second["file_id"], second["version"]) == (file_id, 2), second
    assert second["file_id_text"] == f"file id {file_id}, version 2"
    assert second["done"] == STAGES, second
    assert second["thumb_shown"] and second["thumb_loaded"], second
    with pipeline.client() as client:
        info = client.get(f"/v1/files/{file_id}").json()
        data = (ROOT / "samples/photo-rotated.jpg").read_bytes()
        assert (info["version_number"], info["sha256"]) == (2, hashlib.sha256(data).hexdigest())
        versions = client.get(f"/v1/files/{file_id}/versions").json()["versions"]
        assert [v["version_number"] for v in versions] == [1, 2]

    # An infected version is shown rejected with its reason, read from the version itself.
    choose(page, ROOT / "samples/eicar.pdf")
    infected = wait_items(page, {"eicar.pdf"})["eicar.pdf"]
    assert (infected["state"], infected["version"]) == ("rejected", 3), infected
    assert infected["status"].startswith("rejected: infected"), infected

    # Bob's key, alice's file id: the gateway refuses it (404), and the page says so.
    page.find_element(By.ID, "forget-key").click()
    use_key(page, pipeline.keys["bob"])
    wait_text(page, "notice", "Key accepted")
    choose(page, ROOT / "samples/document.pdf")
    refused = wait_items(page, {"document.pdf"})["document.pdf"]
    assert refused["state"] == "error", refused
    assert "HTTP 404 not_found" in refused["status"], refused


def wait_text(driver: WebDriver, element_id: str, expected: str) -> None:
    wait_text_within(driver, element_id, expected, WAIT_S)
