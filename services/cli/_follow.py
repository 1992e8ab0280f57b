"""Following one file's Server-Sent Events (``GET /v1/files/{id}/events``) for ``sluice
upload --follow``, with reconnects that resume from the last event id (``Last-Event-ID``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from httpx_sse import SSEError, aconnect_sse

from shared.history import LAST_EVENT_TYPE

#: The stages of a file that goes all the way, in order (event types without ``file.``).
STAGES = ("received", "scanned", "stored", "thumbnailed", "committed")
#: Wait before reconnecting after a broken stream or a 404 (the file not recorded yet).
RECONNECT_S = 0.5
#: The event a stage sends when it dead-letters one of the file's messages: the file waits for
#: a person (a replay), so following it ends there.
DEAD_LETTERED = "file.dead_lettered"


@dataclass
class Followed:
    """What following a file gave: the stages seen, whether it reached ``file.committed``, and
    (filled in afterwards from ``GET /v1/files/{id}``) its status, reason and SHA-256."""

    stages: list[str] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    status: str | None = None
    reason: str | None = None
    recorded_sha256: str | None = None


async def follow_file(
    client: httpx.AsyncClient,
    file_id: str,
    timeout_s: float,
    seen: Callable[[str, str | None], None],
    version: int | None = None,
) -> Followed:
    """Read ``file_id``'s events (those of ``version`` only, when given) until its
    ``file.committed`` (``done``), a dead letter, a refusal, or ``timeout_s`` seconds
    (``error`` says which); ``seen(stage, detail)`` is called for each event as it arrives. A
    broken stream, and a 404 while the file is not recorded yet, are retried, resuming after
    the last event id received."""
    url = f"/v1/files/{file_id}/events" + (f"?version={version}" if version else "")
    followed = Followed()
    last_id: str | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (left := deadline - loop.time()) > 0:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with (
                asyncio.timeout(left),
                aconnect_sse(client, "GET", url, headers=headers) as source,
            ):
                status = source.response.status_code
                if status == 404:
                    await asyncio.sleep(RECONNECT_S)
                    continue
                if status != 200:
                    await source.response.aread()
                    followed.error = f"{status}: {source.response.text[:200]}"
                    return followed
                async for message in source.aiter_sse():
                    last_id = message.id or last_id
                    detail = json.loads(message.data).get("detail") if message.data else None
                    stage = message.event.removeprefix("file.")
                    followed.stages.append(stage)
                    seen(stage, detail)
                    if message.event == LAST_EVENT_TYPE:
                        followed.done = True
                        return followed
                    if message.event == DEAD_LETTERED:
                        followed.error = f"dead-lettered: {detail}"
                        return followed
        except TimeoutError:
            break
        except (httpx.TransportError, SSEError, ValueError):
            await asyncio.sleep(RECONNECT_S)
    followed.error = f"no final status after {timeout_s:.0f} s"
    return followed
