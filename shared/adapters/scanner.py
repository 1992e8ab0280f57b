"""The antivirus port's one real implementation: ClamAV's clamd over TCP (``INSTREAM``).

pyclamd does the protocol (``nINSTREAM``, 4-byte big-endian chunk lengths, a zero-length
terminator; ``man clamd``), but its ``scan_stream`` returns ``None`` both for ``stream: OK`` and
for an empty or garbled answer, and its ``send`` may write a chunk only in part. So
:class:`_CapturingClamd` records every byte clamd answers, sends with ``sendall``, and the verdict
is decided here by :func:`parse_instream_answer` on the whole answer read up to end of stream:

- exactly ``stream: OK`` (one newline-terminated line) → clean;
- ``stream: <signature> FOUND`` → infected with that signature, or unscannable when the name is
  one of clamd's own alerts for what it could not look into (:func:`unscannable_reason`);
- anything else (``INSTREAM size limit exceeded. ERROR``, ``... ERROR``, an empty, cut-short or
  extra answer) and any transport failure (refused, reset, broken pipe, timeout) →
  :class:`~shared.errors.ScannerUnavailable`, retried, whose message carries clamd's answer.

pyclamd's sockets block, so every exchange runs in a worker thread (``asyncio.to_thread``),
inside an OpenTelemetry CLIENT span ``clamd INSTREAM``, ``clamd VERSION`` or ``clamd PING``
(:meth:`ClamdScanner.ping`, the scan stage's circuit-breaker probe).
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

import pyclamd

from shared.errors import ScannerUnavailable
from shared.telemetry import tracing

_CHUNK_BYTES = 64 * 1024
_MAX_ANSWER_BYTES = 64 * 1024
_FOUND = re.compile(r"stream: (?P<signature>\S(?:[^\n]*\S)?) FOUND")
_VERSION = re.compile(r"(?P<engine>ClamAV [^/\n]+)(?:/(?P<database>[^\n]*))?\n")
NO_DATABASE_VERSION = "unknown"


#: clamd's names for a file it could not look into whole (``man clamd.conf``): with
#: ``AlertEncryptedArchive``/``AlertEncryptedDoc`` an encrypted archive or PDF is reported as
#: ``Heuristics.Encrypted.<format>``; with ``AlertExceedsMax`` a file past a scan limit as
#: ``Heuristics.Limits.Exceeded.<limit>``. Without these options clamd answers ``OK`` for them.
ENCRYPTED_PREFIX = "Heuristics.Encrypted."
LIMITS_PREFIX = "Heuristics.Limits.Exceeded."
_ENCRYPTED_FORMATS = {
    "PDF": "PDF",
    "Zip": "ZIP archive",
    "7Zip": "7z archive",
    "RAR": "RAR archive",
    "EGG": "EGG archive",
}
_LIMITS = {
    "MaxFileSize": "a file in it is bigger than clamd's MaxFileSize",
    "MaxScanSize": "its unpacked content is bigger than clamd's MaxScanSize",
    "MaxRecursion": "nested deeper than clamd's MaxRecursion",
    "MaxFiles": "holds more files than clamd's MaxFiles",
    "MaxScanTime": "took clamd longer than its MaxScanTime",
}


def unscannable_reason(signature: str) -> str | None:
    """Why clamd could not scan the whole file, when ``signature`` is one of its alerts for that
    (:data:`ENCRYPTED_PREFIX`, :data:`LIMITS_PREFIX`); ``None`` for any other name (malware).

    ``"Heuristics.Encrypted.PDF"`` → ``"encrypted PDF"``;
    ``"Heuristics.Limits.Exceeded.MaxRecursion"`` → ``"nested deeper than clamd's
    MaxRecursion"``; an alert this table does not know keeps clamd's name for it
    (``"Heuristics.Limits.Exceeded.EmailHeaders"`` → ``"past clamd's EmailHeaders limit"``).
    """
    if signature.startswith(ENCRYPTED_PREFIX):
        what = signature.removeprefix(ENCRYPTED_PREFIX)
        return f"encrypted {_ENCRYPTED_FORMATS.get(what, what)}"
    if signature.startswith(LIMITS_PREFIX):
        limit = signature.removeprefix(LIMITS_PREFIX)
        return _LIMITS.get(limit, f"past clamd's {limit} limit")
    return None


@dataclass(frozen=True)
class ScanVerdict:
    """clamd's verdict on one stream: clean; or not, with clamd's name for what it found
    (``signature``): malware (infected), or one of its alerts for a file it could not look
    into, encrypted or past a scan limit (:attr:`unscannable`)."""

    clean: bool
    signature: str | None = None

    @property
    def unscannable(self) -> str | None:
        """Why clamd could not scan the whole file (:func:`unscannable_reason`), e.g.
        ``"encrypted PDF"``; ``None`` when the verdict is clean or infected."""
        if self.clean or self.signature is None:
            return None
        return unscannable_reason(self.signature)


def parse_instream_answer(answer: str) -> ScanVerdict:
    """The verdict in clamd's whole answer to ``nINSTREAM`` (everything read until it closed).

    With the ``n`` command prefix clamd ends every answer line with a newline, so an answer
    without its final newline was cut short and is not trusted.

    Several ``FOUND`` lines (clamd's ``AllMatchScan``) name the first malware among them, and
    an alert for what clamd could not scan only when there is nothing else.

    Raises:
        ScannerUnavailable: anything but exactly ``"stream: OK\\n"`` or newline-terminated
            ``"stream: <signature> FOUND"`` lines (the message quotes the answer).
    """
    if answer == "stream: OK\n":
        return ScanVerdict(clean=True)
    lines = answer.split("\n")
    if len(lines) >= 2 and lines[-1] == "":
        found = [_FOUND.fullmatch(line) for line in lines[:-1]]
        names = [match["signature"] for match in found if match]
        if len(names) == len(found):
            malware = [name for name in names if unscannable_reason(name) is None]
            return ScanVerdict(clean=False, signature=(malware or names)[0])
    raise ScannerUnavailable(f"clamd gave no verdict: {answer[:500]!r}")


def parse_version_answer(answer: str) -> tuple[str, str]:
    """``(engine, signature database)`` from clamd's ``VERSION`` answer.

    ``"ClamAV 1.0.9/27000/Tue Nov 19 09:32:00 2024\\n"`` → ``("ClamAV 1.0.9",
    "27000/Tue Nov 19 09:32:00 2024")``. clamd omits the database part when no official
    database is loaded (e.g. only a local ``.ndb`` test signature): ``"ClamAV 1.4.6\\n"`` →
    ``("ClamAV 1.4.6", "unknown")``.

    Raises:
        ScannerUnavailable: not a newline-terminated ``ClamAV ...`` line.
    """
    match = _VERSION.fullmatch(answer)
    if match is None:
        raise ScannerUnavailable(f"clamd VERSION answer not understood: {answer[:500]!r}")
    engine = match["engine"].strip()
    database = (match["database"] or "").strip() or NO_DATABASE_VERSION
    return engine[:255], database[:255]


class _SendAllSocket:
    """A socket whose ``send`` writes everything (pyclamd calls ``send`` and ignores its count)
    and whose reads are recorded, so the caller sees clamd's whole answer."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.answer = bytearray()
        self.eof = False

    def send(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if data:
            self.answer += data
        else:
            self.eof = True
        return data

    def drain(self) -> None:
        """Read the rest of the answer up to end of stream (bounded)."""
        while not self.eof:
            if len(self.answer) > _MAX_ANSWER_BYTES:
                raise OSError(f"clamd answer longer than {_MAX_ANSWER_BYTES} bytes")
            self.recv(4096)

    def close(self) -> None:
        self._sock.close()


class _CapturingClamd(pyclamd.ClamdNetworkSocket):  # type: ignore[misc]
    """pyclamd's TCP client for one exchange: no probe connection, full sends, raw answer kept,
    no retry-on-timeout loop, and the socket closed by the caller, not by pyclamd."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        # ClamdNetworkSocket.__init__ opens and closes a probe connection; one per scan is enough.
        self.host, self.port, self.timeout = host, port, timeout_s
        self.clamd_socket: Any = None

    def _init_socket(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.clamd_socket = _SendAllSocket(sock)

    def _recv_response(self) -> str:
        data: bytes = self.clamd_socket.recv(4096)
        return data.decode("utf-8", errors="replace").strip()

    def _close_socket(self) -> None:
        """Left open on purpose: :func:`_exchange` reads to end of stream, then closes."""


def _describe(exc: BaseException) -> str:
    # pyclamd re-raises socket errors as its own ConnectionError("Unable to scan stream").
    cause = exc.__cause__ or exc.__context__
    return f"{exc!r} caused by {cause!r}" if cause is not None else repr(exc)


def _exchange(host: str, port: int, timeout_s: float, data: bytes | None) -> str:
    """One pyclamd call, ``INSTREAM`` of ``data`` or ``VERSION`` if ``None``: clamd's whole
    answer, read until clamd closed the connection.

    Raises:
        ScannerUnavailable: a transport failure (refused, reset, broken pipe, timeout).
    """
    client = _CapturingClamd(host, port, timeout_s)
    failure: OSError | None = None
    try:
        if data is None:
            client.version()
        else:
            client.scan_stream(io.BytesIO(data), chunk_size=_CHUNK_BYTES)
    except OSError as exc:  # refused, reset, broken pipe (e.g. the size limit), timeout
        failure = exc
    except Exception:  # pyclamd could not parse the answer; the caller judges it
        pass
    sock: _SendAllSocket | None = client.clamd_socket
    answer = ""
    if sock is not None:
        try:
            sock.drain()
        except OSError as exc:
            failure = failure or exc
        finally:
            sock.close()
        answer = sock.answer.decode("utf-8", errors="replace")
    if failure is not None:
        raise ScannerUnavailable(
            f"clamd exchange failed: {_describe(failure)}; answer {answer[:500]!r}",
            host=host,
            port=port,
        )
    return answer


class ClamdScanner:
    """Scans bytes with clamd at ``host:port``; the scanner port of the scan stage.

    ``timeout_s`` bounds each socket operation (connect, each send, each read), seconds. The
    engine and database versions are cached for ``version_ttl_s`` seconds rather than asked for
    every file, so a signature update shows in events within that time.
    """

    def __init__(
        self, host: str, port: int, timeout_s: float, *, version_ttl_s: float = 300.0
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.version_ttl_s = version_ttl_s
        self._version: tuple[str, str] | None = None
        self._version_at = 0.0
        self._version_lock = asyncio.Lock()

    def _span_attributes(self, command: str) -> dict[str, str | int]:
        return {"server.address": self.host, "server.port": self.port, "clamd.command": command}

    async def scan(self, data: bytes) -> ScanVerdict:
        """Stream ``data`` to clamd (``INSTREAM``) and return its verdict.

        Raises:
            ScannerUnavailable: clamd unreachable, timed out, broke the connection, or answered
                anything but a verdict (size limit, error, empty, garbled); the message quotes
                the answer.
        """
        with tracing.client_span("clamd INSTREAM", self._span_attributes("INSTREAM")) as span:
            span.set_attribute("sluice.size_bytes", len(data))
            try:
                answer = await asyncio.to_thread(
                    _exchange, self.host, self.port, self.timeout_s, data
                )
                verdict = parse_instream_answer(answer)
            except ScannerUnavailable as exc:
                exc.context.update(host=self.host, port=self.port, size_bytes=len(data))
                raise
            span.set_attribute("sluice.clean", verdict.clean)
            return verdict

    async def ping(self, timeout_s: float | None = None) -> None:
        """``PING`` → ``PONG`` (pyclamd's ``ping``): clamd is up and answering commands; the
        scan stage's circuit-breaker probe (``shared.breaker``). ``timeout_s`` bounds each socket
        operation (default: the scanner's), so a clamd that hangs does not hold a worker thread
        longer than the probe waits for it.

        Raises:
            ScannerUnavailable: clamd unreachable, timed out, or did not answer ``PONG``.
        """

        def ping() -> None:
            timeout = self.timeout_s if timeout_s is None else timeout_s
            pyclamd.ClamdNetworkSocket(self.host, self.port, timeout).ping()

        with tracing.client_span("clamd PING", self._span_attributes("PING")):
            try:
                await asyncio.to_thread(ping)
            except Exception as exc:  # pyclamd.ConnectionError, socket errors
                raise ScannerUnavailable(
                    f"clamd PING failed: {_describe(exc)}", host=self.host, port=self.port
                ) from exc

    async def version(self) -> tuple[str, str]:
        """``(engine, signature database version/date)``, e.g. ``("ClamAV 1.0.9",
        "27000/Tue Nov 19 09:32:00 2024")``; cached for ``version_ttl_s`` seconds.

        Raises:
            ScannerUnavailable: clamd unreachable or the answer is not a version.
        """
        async with self._version_lock:
            now = time.monotonic()
            if self._version is None or now - self._version_at >= self.version_ttl_s:
                with tracing.client_span("clamd VERSION", self._span_attributes("VERSION")):
                    answer = await asyncio.to_thread(
                        _exchange, self.host, self.port, self.timeout_s, None
                    )
                    self._version = parse_version_answer(answer)
                self._version_at = now
            return self._version
