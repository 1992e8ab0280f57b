"""Durable renames on a local file system: what POSIX asks beyond ``fsync`` of the file.

``fsync(2)`` of a file makes its bytes and inode durable, not its name: a name a ``rename(2)``
gave it is an entry of its directory, durable only once the directory itself is fsynced
(POSIX ``fsync``; on ext4 the rename otherwise waits for the next journal commit, up to 5 s).
So every write that is renamed into place and then relied on (a ``202`` answered, an event
published) ends with :func:`fsync_directory` of the directory it was renamed into.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """fsync ``directory`` so that the renames and creations in it survive a crash (blocking:
    call it off the event loop).

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
