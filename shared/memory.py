"""Keeping a long-lived worker's memory flat when it handles file-sized buffers.

glibc's ``malloc`` serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start)
with its own ``mmap``, given back to the system at ``free``. But it raises that threshold, up to
32 MiB on 64-bit systems, each time such a block is freed (``man mallopt``, "M_MMAP_THRESHOLD"):
after the first few photos, a worker's 1-4 MB buffers come from the heap, which fragments and
does not shrink back. Setting the threshold pins it (and turns the dynamic adjustment off).

Measured on the thumbnail worker's render pool (1,000 camera-size JPEGs, 2 render processes; the
parent process's RSS once 100 were done, then at the end): 103 -> 113 MiB as glibc leaves it,
85 -> 76 MiB with the threshold pinned at 1 MiB (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: ``mallopt``'s parameter number for ``M_MMAP_THRESHOLD`` (glibc's ``malloc.h``).
M_MMAP_THRESHOLD = -3
#: Where the threshold is pinned: buffers of a file's size are mapped and unmapped whole.
DEFAULT_THRESHOLD_BYTES = 1024 * 1024


def pin_mmap_threshold(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> bool:
    """Serve allocations of at least ``threshold_bytes`` by ``mmap`` from now on, in this
    process; whether it took effect (``False`` where the C library is not glibc, e.g. musl,
    whose allocator has no such setting)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
