"""The gateway's HTTP edge: bounds on how long and how many clients can hold it.

A client that sends its request a byte at a time holds a connection, a file descriptor and,
for an upload, a spool file for as long as it likes (the "slow loris"). uvicorn bounds the
idle time between two requests of a keep-alive connection (``timeout_keep_alive``) and the
connections and requests in progress at once (``limit_concurrency``, past which it answers
503), but not the time a request takes to arrive. This module adds that:

- **headers**: :class:`EdgeProtocol`, uvicorn's h11 protocol with a deadline: a request's
  headers must be complete ``SLUICE_GATEWAY_HEADER_TIMEOUT_S`` after its first byte (after
  the connection is made, for its first request). Past it the client gets ``408`` and the
  connection is closed; a connection that sent nothing is closed without an answer.
- **body**: :class:`BodyDeadline`, an ASGI middleware: a handler waits at most
  ``SLUICE_GATEWAY_BODY_READ_TIMEOUT_S`` for each next chunk of the request body, then gets
  :class:`BodyTimeout` (``408 request_timeout``; an upload's partial spool file is removed).
  An answer sent before the body was read whole (a 401, a 413, a 507, a 408) closes the
  connection, so a client that goes on trickling a refused body cannot keep it either.
- **lingering close**: before that connection is closed, the rest of a refused body is read
  and thrown away while it keeps coming (no gap over :data:`LINGER_GAP_S`, :data:`LINGER_S` in
  all), when its ``Content-Length`` says at most :data:`LINGER_BYTES` remain; nginx's
  ``lingering_close`` does the same. Closing a socket while the client is still sending makes
  the kernel answer with a TCP reset, which can destroy the answer before the client reads it:
  the client would see a broken connection instead of, say, its ``507`` (RFC 9112 §9.6). A
  larger or chunked body is cut at once: a client that wants a clean refusal of a large
  upload sends ``Expect: 100-continue`` and waits for it before sending the body.

The deadline is on the gap between body chunks, not on the whole body (a 10 MiB upload over
a slow mobile link is legitimate): a client that sends a byte just faster than the timeout
keeps its request. Only an authenticated owner gets that far with an upload, and
:class:`~services.gateway.slots.OwnerSlots` bounds how many it holds at once.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger("sluice.gateway")

_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 37\r\nconnection: close\r\n\r\nrequest headers not received in time\n"
)


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers (use
    :func:`edge_protocol` to set it)."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _headers_of: object = None  # the request cycle current when the timer was armed
    _started = False  # bytes of the awaited request have arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(started=False)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(started=True)  # the first bytes of the next request on this connection
        self._started = True
        super().data_received(data)
        if self.cycle is not self._headers_of:  # a new request cycle: its headers are in
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, *, started: bool) -> None:
        self._disarm()
        self._headers_of, self._started = self.cycle, started
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is not self._headers_of or self.transport.is_closing():
            return  # the headers came in (a request pipelined behind the last one)
        if self._started:
            log.warning(
                "gateway.slow_client",
                phase="headers",
                client=f"{self.client[0]}:{self.client[1]}" if self.client else None,
                timeout_s=self.header_timeout_s,
            )
            self.transport.write(_408)
        self.transport.close()


def edge_protocol(header_timeout_s: float) -> type[EdgeProtocol]:
    """:class:`EdgeProtocol` with ``header_timeout_s``, for ``uvicorn.Config(http=...)``."""

    class Protocol(EdgeProtocol):
        pass

    Protocol.header_timeout_s = header_timeout_s
    return Protocol


class BodyTimeout(HTTPException):
    """The next chunk of the request body did not come within the body read timeout
    (answered ``408 request_timeout``)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"no request body received for {timeout_s:g} s")


def announces_body(scope: Scope) -> bool:
    """Whether the request's headers announce a body (RFC 9112 §6.3: a ``Transfer-Encoding``,
    or a ``Content-Length`` other than 0)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return bytes(value).strip() != b"0"
    return False


#: A refused body is read away before its connection is closed (the lingering close) only when
#: at most this many of its bytes remain, in bytes ...
LINGER_BYTES = 1024 * 1024
#: ... for at most this long in all, in seconds ...
LINGER_S = 2.0
#: ... and as long as its chunks keep coming, with no gap longer than this, in seconds.
LINGER_GAP_S = 0.2


def announced_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or None (chunked, or not a number)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(bytes(value).strip())
            except ValueError:
                return None
    return None


class BodyDeadline:
    """Bounds each wait for a request body chunk; after an answer sent before the body was
    read whole, reads the rest away (bounded) and closes the connection."""

    def __init__(self, app: ASGIApp, read_timeout_s: float) -> None:
        self.app = app
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not announces_body(scope):
            await self.app(scope, receive, send)
            return
        body_done = False
        timed_out = False
        received = 0
        length = announced_length(scope)

        async def receive_in_time() -> Message:
            nonlocal body_done, timed_out, received
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                log.warning("gateway.slow_client", phase="body", timeout_s=self.read_timeout_s)
                raise BodyTimeout(self.read_timeout_s) from None
            received += len(message.get("body", b""))
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def linger() -> None:
            """Read the rest of the body away, within the bounds of the lingering close."""
            if timed_out or length is None or length - received > LINGER_BYTES:
                return
            try:
                async with asyncio.timeout(LINGER_S):
                    while not body_done:
                        async with asyncio.timeout(LINGER_GAP_S):
                            await receive_in_time()
            except (TimeoutError, BodyTimeout):
                pass

        async def send_closing(message: Message) -> None:
            if body_done:
                await send(message)
            elif message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                await send({**message, "headers": headers})
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # The answer goes out whole, the body is read away, then the response ends
                # (after which the server closes the connection).
                await send({**message, "more_body": True})
                await linger()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await send(message)

        await self.app(scope, receive_in_time, send_closing)
