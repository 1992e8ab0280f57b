"""The clamd adapter against a real clamd, a clamd of our own started with the project's
clamd.conf (encrypted files and files past the scan limits reported, not passed), a second one
with a small stream limit, and fake TCP servers that answer what a broken clamd might: it must
never call anything clean that clamd did not call clean."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import socket
import struct
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pypdf
import pytest
import pyzipper

from shared.adapters.scanner import ClamdScanner
from shared.adapters.sources import DEFAULT_MAX_BYTES
from shared.devservices import eicar_bytes
from shared.errors import ScannerUnavailable
from shared.settings import ClamdSettings
from tests.e2e.pipeline import free_port
from tests.faults.private_clamd import PrivateClamd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
MiB = 1024 * 1024


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def clamd(services: Any) -> ClamdScanner:
    """The shared clamd (``SLUICE_CLAMD_*``, default 127.0.0.1:3310); a hard failure if absent."""
    settings = ClamdSettings()
    if not _accepts(settings.host, settings.port):
        pytest.fail(
            f"clamd is not listening on {settings.host}:{settings.port}; start it with "
            "`python -c 'from shared import devservices; devservices.up()'`",
            pytrace=False,
        )
    return ClamdScanner(settings.host, settings.port, timeout_s=30.0)


@pytest.fixture(scope="module")
def small_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdScanner]:
    """A clamd of our own with ``StreamMaxLength 1M``, stopped after the module."""
    clamd = PrivateClamd(tmp_path_factory.mktemp("clamd-small"), stream_max_mib=1)
    try:
        clamd.start()
        yield ClamdScanner("127.0.0.1", clamd.port, timeout_s=30.0)
    finally:
        clamd.stop()
        clamd.close()


@pytest.fixture(scope="module")
def project_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdScanner]:
    """A clamd of our own started with the clamd.conf ``shared.devservices`` writes now (its
    alerts and scan limits), whatever the shared one was started with; stopped after the
    module."""
    clamd = PrivateClamd(tmp_path_factory.mktemp("clamd-project"))
    try:
        clamd.start()
        yield ClamdScanner("127.0.0.1", clamd.port, timeout_s=60.0)
    finally:
        clamd.stop()
        clamd.close()


# -- the real clamd ----------------------------------------------------------------------------


async def test_eicar_is_infected(clamd: ClamdScanner) -> None:
    verdict = await clamd.scan(eicar_bytes())
    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith("Eicar-Test-Signature")


async def test_eicar_inside_a_pdf_is_infected(clamd: ClamdScanner) -> None:
    verdict = await clamd.scan((SAMPLES / "eicar.pdf").read_bytes())
    assert not verdict.clean


@pytest.mark.parametrize("name", ["photo-rotated.jpg", "photo.png", "document.pdf"])
async def test_real_files_are_clean(clamd: ClamdScanner, name: str) -> None:
    assert (await clamd.scan((SAMPLES / name).read_bytes())).clean


async def test_empty_and_chunk_multiple_streams_are_clean(clamd: ClamdScanner) -> None:
    assert (await clamd.scan(b"")).clean
    assert (await clamd.scan(os.urandom(128 * 1024))).clean  # exactly two 64 KiB chunks


async def test_ten_megabyte_streams_get_a_verdict(clamd: ClamdScanner) -> None:
    assert (await clamd.scan(os.urandom(10 * MiB))).clean
    assert not (await clamd.scan(eicar_bytes() + os.urandom(10 * MiB - 68))).clean


async def test_version(clamd: ClamdScanner) -> None:
    engine, database = await clamd.version()
    assert engine.startswith("ClamAV ")
    assert engine.split(" ", 1)[1][0].isdigit()
    assert database  # "<n>/<date>" with official databases, "unknown" with a test signature only
    assert "/" not in engine


async def test_concurrent_scans(clamd: ClamdScanner) -> None:
    payloads = [eicar_bytes() if i % 2 else os.urandom(256 * 1024) for i in range(8)]
    verdicts = await asyncio.gather(*(clamd.scan(p) for p in payloads))
    assert [v.clean for v in verdicts] == [i % 2 == 0 for i in range(8)]


# -- what clamd cannot scan whole: reported, never clean ---------------------------------------


def encrypted_pdf(user_password: str) -> bytes:
    """samples/document.pdf encrypted by pypdf with the PDF standard security handler, RC4
    128-bit (AES needs a crypto library pypdf does not bring), owner password ``owner``."""
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(SAMPLES / "document.pdf"))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_zip() -> bytes:
    """A ZIP whose one member is AES-encrypted (WinZip AE-2, pyzipper)."""
    out = io.BytesIO()
    with pyzipper.AESZipFile(
        out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as archive:
        archive.setpassword(b"secret")
        archive.writestr("invoice.pdf", (SAMPLES / "document.pdf").read_bytes())
    return out.getvalue()


def nested_zip(depth: int) -> bytes:
    """``depth`` ZIPs, each holding the next; the innermost holds a text file."""
    data = b"the innermost file"
    for level in range(depth):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr(f"level-{level}.zip" if level else "note.txt", data)
        data = out.getvalue()
    return data


def zip_of_zeros(members: int, member_bytes: int) -> bytes:
    """A ZIP of ``members`` members of ``member_bytes`` zero bytes each: deflate makes each
    about a thousandth of its size."""
    out = io.BytesIO()
    zeros = bytes(member_bytes)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(members):
            archive.writestr(f"zeros-{i}.bin", zeros)
    return out.getvalue()


def zip_of_many_files(count: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i in range(count):
            archive.writestr(f"file-{i}.txt", f"file {i}")
    return out.getvalue()


async def test_an_encrypted_pdf_is_unscannable(project_clamd: ClamdScanner) -> None:
    verdict = await project_clamd.scan(encrypted_pdf(user_password="secret"))
    assert (verdict.clean, verdict.signature) == (False, "Heuristics.Encrypted.PDF")
    assert verdict.unscannable == "encrypted PDF"


async def test_a_pdf_that_opens_without_a_password_is_scanned_and_clean(
    project_clamd: ClamdScanner,
) -> None:
    # Only an owner password (print/copy restrictions): clamd decrypts it with the empty user
    # password and scans it.
    assert (await project_clamd.scan(encrypted_pdf(user_password=""))).clean


async def test_an_encrypted_zip_is_unscannable(project_clamd: ClamdScanner) -> None:
    verdict = await project_clamd.scan(encrypted_zip())
    assert (verdict.clean, verdict.signature) == (False, "Heuristics.Encrypted.Zip")
    assert verdict.unscannable == "encrypted ZIP archive"


@pytest.mark.parametrize(
    ("build", "limit"),
    [
        # 65 MiB of zeros in 65 KiB: the one file inside is past MaxFileSize (64M).
        (lambda: gzip.compress(bytes(65 * MiB)), "MaxFileSize"),
        # Five members of 60 MiB in 300 KiB: together past MaxScanSize (256M).
        (lambda: zip_of_zeros(5, 60 * MiB), "MaxScanSize"),
        # 20 ZIPs in one another, past MaxRecursion (17).
        (lambda: nested_zip(20), "MaxRecursion"),
        (lambda: zip_of_many_files(10_001), "MaxFiles"),
    ],
    ids=["gzip-65MiB", "zip-300MiB", "zip-nested-20", "zip-10001-files"],
)
async def test_an_archive_past_a_scan_limit_is_unscannable(
    project_clamd: ClamdScanner, build: Callable[[], bytes], limit: str
) -> None:
    data = build()
    assert len(data) < 2 * MiB  # small on the wire: the limit is on what clamd unpacks
    verdict = await project_clamd.scan(data)
    assert (verdict.clean, verdict.signature) == (False, f"Heuristics.Limits.Exceeded.{limit}")
    assert verdict.unscannable is not None and limit in verdict.unscannable


async def test_archives_within_the_limits_are_clean(project_clamd: ClamdScanner) -> None:
    assert (await project_clamd.scan(nested_zip(15))).clean
    assert (await project_clamd.scan(zip_of_zeros(3, 60 * MiB))).clean  # 180 MiB unpacked
    assert (await project_clamd.scan(gzip.compress(bytes(60 * MiB)))).clean


@pytest.mark.parametrize(
    "name",
    ["photo-rotated.jpg", "photo.png", "photo.webp", "photo.heic", "animation.gif", "document.pdf"],
)
async def test_real_files_are_clean_with_the_alerts_on(
    project_clamd: ClamdScanner, name: str
) -> None:
    assert (await project_clamd.scan((SAMPLES / name).read_bytes())).clean


async def test_the_largest_file_sluice_reads_fits_the_stream_and_file_limits(
    project_clamd: ClamdScanner,
) -> None:
    assert (await project_clamd.scan(os.urandom(DEFAULT_MAX_BYTES))).clean


async def test_malware_is_still_infected_with_the_alerts_on(project_clamd: ClamdScanner) -> None:
    verdict = await project_clamd.scan(eicar_bytes())
    assert verdict.signature is not None and verdict.signature.startswith("Eicar-Test-Signature")
    assert verdict.unscannable is None
    assert not (await project_clamd.scan((SAMPLES / "eicar.pdf").read_bytes())).clean


# -- a clamd with a small stream limit ---------------------------------------------------------


async def test_stream_over_the_limit_is_no_verdict(small_clamd: ClamdScanner) -> None:
    assert (await small_clamd.scan(os.urandom(MiB // 2))).clean
    for size in (2 * MiB, 20 * MiB):
        with pytest.raises(ScannerUnavailable, match="INSTREAM size limit exceeded"):
            await small_clamd.scan(os.urandom(size))


# -- clamd unreachable or broken ---------------------------------------------------------------


async def test_closed_port_is_no_verdict() -> None:
    scanner = ClamdScanner("127.0.0.1", free_port(), timeout_s=2.0)
    with pytest.raises(ScannerUnavailable, match=r"[Rr]efused"):
        await scanner.scan(b"hello")
    with pytest.raises(ScannerUnavailable):
        await scanner.version()


async def _read_instream(reader: asyncio.StreamReader) -> bytes:
    """Read ``nINSTREAM\\n`` and the chunks up to the zero-length terminator, like clamd."""
    assert await reader.readline() == b"nINSTREAM\n"
    data = bytearray()
    while size := struct.unpack("!L", await reader.readexactly(4))[0]:
        data += await reader.readexactly(size)
    return bytes(data)


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_clamd(behaviour: Behaviour) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server on a free port running ``behaviour`` per connection; yields the port and a
    list with one entry per connection."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await behaviour(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, connections


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: bytes) -> None:
    await _read_instream(reader)
    writer.write(text)
    await writer.drain()


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closes without a word
        b"hello\n",
        b"stream: OK",  # cut short before its newline
        b"stream: OK\nextra\n",
        b"stream: OK\x00",
        b"stream: ERROR\n",
        b"INSTREAM size limit exceeded. ERROR\n",
        b"\xff\xfe\x00garbage",
    ],
)
async def test_fake_clamd_answers_are_never_clean(answer: bytes) -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer(reader, writer, answer)

    async with fake_clamd(behaviour) as (port, _):
        with pytest.raises(ScannerUnavailable):
            await ClamdScanner("127.0.0.1", port, timeout_s=5.0).scan(b"some file")


async def test_fake_clamd_that_answers_ok_before_reading_the_stream_is_not_clean() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"stream: OK\n")
        await writer.drain()

    async with fake_clamd(behaviour) as (port, _):
        with pytest.raises(ScannerUnavailable):
            await ClamdScanner("127.0.0.1", port, timeout_s=5.0).scan(os.urandom(16 * MiB))


async def test_fake_clamd_that_never_answers_times_out() -> None:
    release = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_instream(reader)
        await release.wait()

    async with fake_clamd(behaviour) as (port, _):
        started = time.monotonic()
        with pytest.raises(ScannerUnavailable, match="timed out"):
            await ClamdScanner("127.0.0.1", port, timeout_s=0.5).scan(b"some file")
        assert time.monotonic() - started < 5
        release.set()


async def test_fake_clamd_verdicts_are_read_exactly() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await _read_instream(reader)
        writer.write(b"stream: Fake.Sig FOUND\n" if b"bad" in data else b"stream: OK\n")
        await writer.drain()

    async with fake_clamd(behaviour) as (port, _):
        scanner = ClamdScanner("127.0.0.1", port, timeout_s=5.0)
        assert (await scanner.scan(b"fine")).clean
        verdict = await scanner.scan(b"a bad file")
        assert (verdict.clean, verdict.signature) == (False, "Fake.Sig")


async def test_version_is_cached_for_its_ttl() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"nVERSION\n"
        writer.write(b"ClamAV 1.0.9/27000/Tue Nov 19 09:32:00 2024\n")
        await writer.drain()

    async with fake_clamd(behaviour) as (port, connections):
        cached = ClamdScanner("127.0.0.1", port, timeout_s=5.0, version_ttl_s=300)
        answers = {await cached.version() for _ in range(5)}
        assert answers == {("ClamAV 1.0.9", "27000/Tue Nov 19 09:32:00 2024")}
        assert len(connections) == 1
        uncached = ClamdScanner("127.0.0.1", port, timeout_s=5.0, version_ttl_s=0)
        for _ in range(3):
            await uncached.version()
        assert len(connections) == 4


async def test_ping_answers_while_clamd_runs_and_fails_fast_when_nothing_listens(
    clamd: ClamdScanner,
) -> None:
    await clamd.ping()
    nothing = ClamdScanner("127.0.0.1", free_port(), timeout_s=5.0)
    started = time.monotonic()
    with pytest.raises(ScannerUnavailable, match="PING"):
        await nothing.ping(timeout_s=1.0)
    assert time.monotonic() - started < 2.0
