"""Thumbnails rendered in child processes: every core used, a decoder crash contained.

The thumbnail worker renders each image in a process of a
:class:`concurrent.futures.ProcessPoolExecutor` (``spawn`` start method), so one worker uses
``SLUICE_THUMBNAIL_PROCESSES`` cores, and a decoder that crashes (a segfault or an abort in
libjpeg, libwebp, libheif) kills a child process, not the worker.

- **Crashes.** A dead child breaks the whole executor (Python's ``BrokenProcessPool``): every
  image in flight fails with it, the one that killed it and its bystanders alike. So the pool is
  replaced, and each of those images is rendered again *alone*, in a process of its own: an
  image that kills that one too is the culprit. (That process must first answer a trivial
  task: one that cannot even start, e.g. a main module that starts a pool when it is imported
  again by ``spawn``, is :class:`RetryableError`, not the image's fault.) Once an image has killed
  ``SLUICE_THUMBNAIL_MAX_CRASHES`` processes, :meth:`RenderPool.render` raises
  :class:`ThumbnailError` and the file is committed with that ``thumbnail_error``, like a
  corrupt image. The count lives in the one handling of the message: the worker survives the
  crash, so nothing is redelivered for it.
- **Hangs.** An image whose render takes longer than ``SLUICE_THUMBNAIL_RENDER_TIMEOUT_S``
  (a decoder in an endless loop) has the executor's processes killed, which breaks it as a
  crash does, and counts as one: the image is rendered again alone, and once it has used up
  its ``SLUICE_THUMBNAIL_MAX_CRASHES`` it gets ``thumbnail_error`` ``decoder timed out``.
  Without this a hung decoder would hold a render process, and the message, for ever.
- **A killed worker.** A worker killed outright (``SIGKILL``, the OOM killer) cannot shut its
  executor down, and its render processes, orphaned, would wait for tasks for ever. Each checks
  every :data:`PARENT_CHECK_S` seconds that the worker that started it is still its parent,
  and exits when it is not.
- **Recycling.** After ``SLUICE_THUMBNAIL_MAX_TASKS_PER_CHILD`` images per process the executor
  is replaced by a new one, and the old one's processes exit once their images are done, so a
  leak in a decoder cannot grow without bound. (Python 3.11's own ``max_tasks_per_child`` can
  hang the executor when it replaces a process, so the whole executor is replaced instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from shared.errors import RetryableError, ThumbnailError
from shared.imaging.render import Thumbnail, render_thumbnails

__all__ = ["RenderFunction", "RenderPool", "cpu_count"]

T = TypeVar("T")

#: ``render(data, content_type, **options)``: a module-level function, so a spawned child can
#: import it (``render_thumbnails``, or a test's own).
RenderFunction = Callable[..., list[Thumbnail]]


#: Seconds between a render process's checks that the worker that started it is alive.
PARENT_CHECK_S = 1.0


def _exit_with_parent(parent: int) -> None:
    """In each render process (the executor's initializer): a daemon thread that ends the
    process once ``parent``, the worker that started it, is no longer its parent (it died and
    the process was handed to init or a subreaper)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="sluice-parent-watch", daemon=True).start()


def cpu_count() -> int:
    """The CPU cores this process may run on (``os.sched_getaffinity``), at least 1."""
    return max(1, len(os.sched_getaffinity(0)))


def _run(
    render: Callable[..., Any], data: bytes, content_type: str, options: dict[str, Any]
) -> Any:
    """In the child: what ``render`` returns (never a tuple), or a :class:`ThumbnailError` as
    (message, context), which an exception would lose in pickling."""
    try:
        return render(data, content_type, **options)
    except ThumbnailError as exc:
        return exc.message, exc.context


class _TimedOut(Exception):
    """A render ran past the pool's timeout; its executor's processes were killed."""


def _kill_processes(executor: ProcessPoolExecutor) -> None:
    """SIGKILL every process of ``executor`` (``kill_workers`` from Python 3.14; before it,
    the executor's process table, which it keeps under ``_processes``)."""
    kill_workers = getattr(executor, "kill_workers", None)
    if kill_workers is not None:
        kill_workers()
        return
    processes: dict[int, Any] = getattr(executor, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(Exception):
            process.kill()


class RenderPool:
    """Render processes for one worker.

    ``processes`` (1-64) run at once; each executor takes ``processes * max_tasks_per_child``
    images before it is replaced; an image may kill ``max_crashes`` (1-10) processes, a render
    past ``render_timeout_s`` seconds counting as one. ``render`` is the function run in the
    children (``render_thumbnails`` unless a test gives its own).
    """

    def __init__(
        self,
        *,
        processes: int,
        max_tasks_per_child: int,
        max_crashes: int,
        render_timeout_s: float = 60.0,
        render: RenderFunction = render_thumbnails,
    ) -> None:
        if not 1 <= processes <= 64 or max_tasks_per_child < 1 or not 1 <= max_crashes <= 10:
            raise ValueError(
                f"bad pool size: processes={processes}, max_tasks_per_child="
                f"{max_tasks_per_child}, max_crashes={max_crashes}"
            )
        self._context = multiprocessing.get_context("spawn")
        self._processes = processes
        self._per_executor = processes * max_tasks_per_child
        self._max_crashes = max_crashes
        self._timeout_s = render_timeout_s
        self._render = render
        self._executor = self._new(processes)
        self._taken = 0

    async def render(self, data: bytes, content_type: str, **options: Any) -> list[Thumbnail]:
        """The thumbnails of ``data``, as ``render_thumbnails(data, content_type, **options)``
        makes them, from a child process (:meth:`run` with the pool's render function)."""
        thumbnails: list[Thumbnail] = await self.run(self._render, data, content_type, **options)
        return thumbnails

    async def run(
        self, function: Callable[..., T], data: bytes, content_type: str, **options: Any
    ) -> T:
        """``function(data, content_type, **options)`` in a child process, with the pool's
        crash, timeout and recycling rules. ``function`` is a module-level function (a spawned
        child imports it) that returns anything but a tuple and raises
        :class:`ThumbnailError` for a bad image.

        Raises:
            ThumbnailError: what the render raised (corrupt, bomb, ...), or ``decoder crashed``
                once the image has killed ``max_crashes`` processes.
            RetryableError: a process to render the image alone could not even run
                ``os.getpid``.
        """
        executor = self._take()
        crashes = 0
        while True:
            try:
                result: T = await self._submit(executor, function, data, content_type, options)
                return result
            except (BrokenProcessPool, _TimedOut) as exc:
                timed_out = isinstance(exc, _TimedOut)
                crashes += 1
                if executor is self._executor:  # the first of its images to see it broken
                    self._executor, self._taken = self._new(self._processes), 0
                executor.shutdown(wait=False)
            if crashes >= self._max_crashes:
                processes = "process" if crashes == 1 else "processes"
                if timed_out:
                    raise ThumbnailError(
                        f"decoder timed out: no result in {self._timeout_s:g} s, "
                        f"{crashes} render {processes} killed",
                        content_type=content_type,
                    )
                raise ThumbnailError(
                    f"decoder crashed: the image killed {crashes} render {processes}",
                    content_type=content_type,
                )
            executor = await self._alone(content_type)  # a crash now is this image's own

    async def close(self) -> None:
        """Stop the processes (images in flight are finished first)."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def _alone(self, content_type: str) -> ProcessPoolExecutor:
        """A new process of its own, checked to run a trivial task."""
        executor = self._new(1)
        try:
            await asyncio.wrap_future(executor.submit(os.getpid))
        except BrokenProcessPool as exc:
            executor.shutdown(wait=False)
            raise RetryableError(
                "render process cannot start: it died before its first task",
                content_type=content_type,
            ) from exc
        return executor

    def _new(self, processes: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            processes,
            mp_context=self._context,
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )

    def _take(self) -> ProcessPoolExecutor:
        """The executor for the next image: a new one once this one has had its share."""
        if self._taken >= self._per_executor:
            old, self._executor, self._taken = self._executor, self._new(self._processes), 0
            old.shutdown(wait=False)  # its processes exit once their images are done
        self._taken += 1
        return self._executor

    async def _submit(
        self,
        executor: ProcessPoolExecutor,
        function: Callable[..., Any],
        data: bytes,
        content_type: str,
        options: dict[str, Any],
    ) -> Any:
        future = executor.submit(_run, function, data, content_type, options)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), self._timeout_s)
        except TimeoutError:
            _kill_processes(executor)  # breaks it: the images beside this one are retried
            raise _TimedOut from None
        finally:
            if executor is not self._executor:  # a process of its own: done with it
                executor.shutdown(wait=False)
        if isinstance(result, tuple):
            message, context = result
            raise ThumbnailError(message, **context)
        return result
