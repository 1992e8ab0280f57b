"""Render functions for the render-pool tests, importable by a spawned child process.

``render`` behaves as ``render_thumbnails`` except on marker inputs: ``b"abort"`` calls
``os.abort()`` (SIGABRT, as a failed assertion in a C decoder would), ``b"kill"`` sends the
process SIGKILL, ``b"pid"`` answers one thumbnail whose data is the child's process id,
``b"hang"`` never returns (a decoder in an endless loop).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from shared.imaging.render import Thumbnail, render_thumbnails


def render(data: bytes, content_type: str, **options: Any) -> list[Thumbnail]:
    if data == b"abort":
        os.abort()
    if data == b"kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if data == b"hang":
        while True:
            time.sleep(1)
    if data == b"pid":
        return [Thumbnail(1, 1, 1, str(os.getpid()).encode())]
    return render_thumbnails(data, content_type, **options)
