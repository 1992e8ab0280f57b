"""The text transforms end to end (docs/transforms.md; seeds 002 and 003: OCR, PDF text): one
``sluice run`` with ``SLUICE_PDFTEXT_ENABLED`` and ``SLUICE_OCR_ENABLED`` against the real
RabbitMQ, PostgreSQL, SeaweedFS, clamd and Tesseract. Every input is made here: a PNG of English
and French sentences drawn with DejaVu Sans, a two-page PDF with a text layer (fpdf2), a
scanned-only PDF (Pillow), a corrupt PDF. The test checks what a user would: the text served,
the words found, the file still ``available``, the history, search by a word, and that another
owner never sees the file.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from shared import devservices
from tests.e2e.pipeline import ROOT, Pipeline, queue_depths, start_pipeline

pytestmark = pytest.mark.e2e

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Debian's fonts-dejavu-core
ENGLISH = [
    "The quick brown fox jumps over the lazy dog near the harbour.",
    "Please send the signed contract to our office before Friday.",
]
FRENCH = [
    "Le bateau arrive au port demain matin avec une cargaison de pommes.",
    "Les enfants jouent dans le jardin pendant que leurs parents travaillent.",
]
PAGE_ONE = "Quarterly ledger of the northern quay, first page."
PAGE_TWO = "The lighthouse keeper wrote this second page."
#: A PDF header, then a cut-off object: sniffed as a PDF, unreadable by PDFium.
CORRUPT_PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Cat" + b"\x00" * 64
SCANNED = [
    "Minutes of the committee meeting held in Rennes on Monday.",
    "The members approved the budget for the new library.",
    "La séance est levée à midi après le vote du conseil.",
]


def words(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped."""
    return re.findall(r"[\w']+", text.lower())


def found_ratio(expected: list[str], text: str) -> float:
    """The share of ``expected``'s words (with repeats) that ``text`` holds."""
    wanted, got = words(" ".join(expected)), set(words(text))
    return sum(word in got for word in wanted) / len(wanted)


def drawn(lines: list[str]) -> Image.Image:
    """``lines`` in black DejaVu Sans 40 px on white, as a scanner would give them."""
    assert FONT.exists(), f"{FONT} missing: apt-get install fonts-dejavu-core (bootstrap does)"
    font = ImageFont.truetype(str(FONT), 40)
    image = Image.new("RGB", (1900, 120 + 90 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((60, 60 + 90 * index), line, fill="black", font=font)
    return image


def png_of(lines: list[str]) -> bytes:
    buffer = io.BytesIO()
    drawn(lines).save(buffer, "PNG")
    return buffer.getvalue()


def text_layer_pdf(pages: list[str], title: str) -> bytes:
    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("helvetica", size=14)
    for text in pages:
        pdf.add_page()
        pdf.cell(text=text)
    return bytes(pdf.output())


def scanned_pdf(lines: list[str]) -> bytes:
    """An image of text saved as a PDF: no text layer at all."""
    buffer = io.BytesIO()
    drawn(lines).save(buffer, "PDF", resolution=200)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(
        tmp_path_factory.mktemp("text"),
        "text",
        {"SLUICE_PDFTEXT_ENABLED": "true", "SLUICE_OCR_ENABLED": "true"},
    )


def upload(
    pipeline: Pipeline, name: str, data: bytes, owner: str = "alice", **metadata: str
) -> str:
    with pipeline.client(owner) as client:
        answer = client.post(
            "/v1/files",
            files={"file": (name, data)},
            data={"metadata": json.dumps(metadata)} if metadata else None,
        )
    assert answer.status_code == 202, answer.text
    file_id: str = answer.json()["file_id"]
    return file_id


def wait_text(
    pipeline: Pipeline, file_id: str, owner: str = "alice", timeout_s: float = 120
) -> Any:
    """``GET /v1/files/{id}/text`` once it is no longer 404 ``text_pending`` (nor the file
    unknown yet)."""
    deadline = time.monotonic() + timeout_s
    with pipeline.client(owner) as client:
        while True:
            answer = client.get(f"/v1/files/{file_id}/text")
            pending = answer.status_code == 404 and answer.json()["error"]["code"] in (
                "text_pending",
                "not_found",
            )
            if not pending:
                return answer
            assert pipeline.process.poll() is None, f"sluice died; see {pipeline.log_path}"
            assert time.monotonic() < deadline, f"no text after {timeout_s} s: {answer.text}"
            time.sleep(0.3)


def history(pipeline: Pipeline, file_id: str) -> list[tuple[str, str]]:
    rows = pipeline.sql(
        "SELECT event_type, detail FROM file_events WHERE file_id = %s ORDER BY seq", file_id
    )
    return [(str(kind), str(detail)) for kind, detail in rows]


def search(pipeline: Pipeline, owner: str, **params: str) -> set[str]:
    with pipeline.client(owner) as client:
        answer = client.get("/v1/files", params=params)
    assert answer.status_code == 200, answer.text
    return {item["file_id"] for item in answer.json()["files"]}


@pytest.fixture(scope="module")
def files(pipeline: Pipeline) -> dict[str, str]:
    """The inputs, uploaded once; each waited for until ``available`` and its text settled."""
    uploaded = {
        "png": upload(pipeline, "sentences.png", png_of(ENGLISH + FRENCH), ocr_lang="eng+fra"),
        "pdf": upload(pipeline, "ledger.pdf", text_layer_pdf([PAGE_ONE, PAGE_TWO], "Ledger")),
        "scan": upload(pipeline, "minutes-scan.pdf", scanned_pdf(SCANNED)),
        "corrupt": upload(
            pipeline, "broken.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Cat" + b"\x00" * 64
        ),
        "bob": upload(pipeline, "bob-notes.pdf", text_layer_pdf([PAGE_TWO], "Bob"), owner="bob"),
    }
    for name, file_id in uploaded.items():
        owner = "bob" if name == "bob" else "alice"
        assert pipeline.wait_final(file_id, owner)["status"] == "available", name
        wait_text(pipeline, file_id, owner)
    return uploaded


def test_png_is_read_by_ocr(pipeline: Pipeline, files: dict[str, str]) -> None:
    started = time.monotonic()
    answer = wait_text(pipeline, files["png"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    ratio = found_ratio(ENGLISH + FRENCH, answer.text)
    print(f"ocr: {ratio:.1%} of the words found ({time.monotonic() - started:.2f} s to read)")
    assert ratio >= 0.95, answer.text
    with pipeline.client() as client:
        detail = client.get(f"/v1/files/{files['png']}").json()
    assert detail["status"] == "available"
    (artefact,) = detail["artefacts"]
    assert artefact["transform"] == "ocr"
    assert artefact["language"] == "eng+fra"
    assert artefact["size_bytes"] == len(answer.content)
    assert artefact["url"] == f"/v1/files/{files['png']}/text"
    assert "file.text_extracted" in [kind for kind, _ in history(pipeline, files["png"])]


def test_pdf_text_layer_two_pages(pipeline: Pipeline, files: dict[str, str]) -> None:
    answer = wait_text(pipeline, files["pdf"])
    assert answer.status_code == 200, answer.text
    pages = answer.text.split("\f")
    assert [page.strip() for page in pages] == [PAGE_ONE, PAGE_TWO]
    assert answer.headers["x-sluice-pages"] == "2"
    with pipeline.client() as client:
        (artefact,) = client.get(f"/v1/files/{files['pdf']}").json()["artefacts"]
    assert (artefact["transform"], artefact["pages"], artefact["ocr_pages"]) == ("pdftext", 2, 0)
    assert artefact["document_metadata"]["Title"] == "Ledger"


def test_scanned_pdf_is_read_by_ocr(pipeline: Pipeline, files: dict[str, str]) -> None:
    answer = wait_text(pipeline, files["scan"])
    assert answer.status_code == 200, answer.text
    ratio = found_ratio(SCANNED, answer.text)
    print(f"scanned PDF: {ratio:.1%} of the words found")
    assert ratio >= 0.95, answer.text
    with pipeline.client() as client:
        (artefact,) = client.get(f"/v1/files/{files['scan']}").json()["artefacts"]
    assert (artefact["pages"], artefact["ocr_pages"]) == (1, 1)


def test_corrupt_pdf_gets_its_error_and_stays_available(
    pipeline: Pipeline, files: dict[str, str]
) -> None:
    answer = wait_text(pipeline, files["corrupt"])
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "text_failed"
    assert "not a readable PDF" in error["message"]
    with pipeline.client() as client:
        detail = client.get(f"/v1/files/{files['corrupt']}").json()
    assert detail["status"] == "available"
    assert detail["artefacts"] == []
    assert "not a readable PDF" in detail["text_error"]
    assert ("file.text_failed", f"no text (pdftext): {detail['text_error']}") in history(
        pipeline, files["corrupt"]
    )
    depths = queue_depths(pipeline)
    assert depths["text.pdftext.dlq"] == depths["text.ocr.dlq"] == 0, depths


def test_search_finds_own_files_by_a_word_of_their_text(
    pipeline: Pipeline, files: dict[str, str]
) -> None:
    assert search(pipeline, "alice", q="cargaison") == {files["png"]}
    assert search(pipeline, "alice", q="Friday") == {files["png"]}
    # "lighthouse" is in alice's ledger.pdf and in bob's notes: each sees only their own.
    assert search(pipeline, "alice", q="lighthouse") == {files["pdf"]}
    assert search(pipeline, "bob", q="lighthouse") == {files["bob"]}
    assert search(pipeline, "bob", q="cargaison") == set()
    assert search(pipeline, "alice", q="Rennes") == {files["scan"]}
    # By a word of the name, and with the list's other filters.
    assert search(pipeline, "bob", q="notes") == {files["bob"]}
    assert search(pipeline, "alice", q="sentences") == {files["png"]}
    assert search(pipeline, "alice", q="lighthouse", content_type="image/png") == set()
    assert search(pipeline, "alice", q="quay OR cargaison", content_type="application/pdf") == {
        files["pdf"]
    }


def test_search_pages_with_a_cursor(pipeline: Pipeline, files: dict[str, str]) -> None:
    with pipeline.client() as client:
        first = client.get("/v1/files", params={"q": "the", "limit": 1}).json()
        assert len(first["files"]) == 1 and first["next_cursor"]
        second = client.get(
            "/v1/files", params={"q": "the", "limit": 1, "cursor": first["next_cursor"]}
        ).json()
        other = client.get("/v1/files", params={"q": "other", "cursor": first["next_cursor"]})
    assert second["files"][0]["file_id"] != first["files"][0]["file_id"]
    assert other.status_code == 422  # a cursor is bound to its query


def test_an_ocr_language_not_installed_is_refused_at_upload(pipeline: Pipeline) -> None:
    with pipeline.client() as client:
        answer = client.post(
            "/v1/files",
            files={"file": ("sentences.png", png_of(ENGLISH))},
            data={"metadata": json.dumps({"ocr_lang": "tlh"})},
        )
    assert answer.status_code == 422, answer.text
    assert "OCR language not installed: tlh" in answer.json()["error"]["message"]


def test_text_route_checks_the_owner(pipeline: Pipeline, files: dict[str, str]) -> None:
    with pipeline.client("bob") as client:
        answer = client.get(f"/v1/files/{files['pdf']}/text")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def sluice_status(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """``sluice status --json``'s rows by stage."""
    done = subprocess.run(
        [sys.executable, "-m", "services", "status", "--json"],
        env={**pipeline.env, "SLUICE_LOG_LEVEL": "warning"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {row["stage"]: row for row in json.loads(done.stdout)["stages"]}


def test_status_shows_the_transforms(pipeline: Pipeline, files: dict[str, str]) -> None:
    # The management API refreshes its numbers every few seconds.
    deadline = time.monotonic() + 30
    while True:
        stages = sluice_status(pipeline)
        if all(stages[name]["consumers"] == 1 for name in ("pdftext", "ocr", "thumbnail")):
            break
        assert time.monotonic() < deadline, stages
        time.sleep(1)
    for name in ("pdftext", "ocr"):
        assert stages[name]["queue"] == f"{pipeline.prefix}.{name}"
        assert stages[name]["dead_letters"] == 0, stages[name]


def test_gdpr_export_holds_the_text(
    pipeline: Pipeline, files: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "alice.zip"
    done = subprocess.run(
        [sys.executable, "-m", "services", "gdpr", "export", "--owner", "alice", "--out", str(out)],
        env={**pipeline.env, "SLUICE_LOG_LEVEL": "warning"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as archive:
        document = json.loads(archive.read("metadata.json"))
        by_id = {entry["file_id"]: entry for entry in document["files"]}
        text = by_id[files["pdf"]]["versions"][0]["text"]
        assert text["path"] == f"files/{files['pdf']}/v1-ledger.pdf.text.txt"
        pages = archive.read(text["path"]).decode().split("\f")
        assert [page.strip() for page in pages] == [PAGE_ONE, PAGE_TWO]
        failed = by_id[files["corrupt"]]["versions"][0]["text"]
        assert failed["state"] == "failed" and "not a readable PDF" in failed["error"]
        assert files["bob"] not in by_id


def test_deletion_removes_the_text_and_its_row(pipeline: Pipeline, files: dict[str, str]) -> None:
    file_id = files["scan"]
    (key,) = pipeline.sql("SELECT text_key FROM file_texts WHERE file_id = %s", file_id)[0]
    s3 = devservices.s3_client()
    assert s3.head_object(Bucket=pipeline.bucket, Key=key)
    with pipeline.client() as client:
        assert client.delete(f"/v1/files/{file_id}").status_code == 202
    deadline = time.monotonic() + 60
    while True:
        left = s3.list_objects_v2(Bucket=pipeline.bucket, Prefix=key).get("KeyCount", 0)
        rows = pipeline.sql("SELECT 1 FROM file_texts WHERE file_id = %s", file_id)
        if left == 0 and not rows:
            break
        assert time.monotonic() < deadline, f"text object {left}, rows {rows}"
        time.sleep(0.3)
    assert search(pipeline, "alice", q="Rennes") == set()
