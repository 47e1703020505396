"""glibc heap settings for long batch runs: reuse freed memory instead of giving it back.

glibc serves a large allocation with its own fresh mmap() and unmaps it on free
(above a threshold that starts at 128 kB), and trims the heap's free top back to
the kernel. A classify run allocates the same multi-megabyte tensors every batch,
so each came back as fresh pages for the kernel to fault in and zero; keeping
freed memory in the heap avoids that without raising the peak RSS (figures:
docs/performance.md, "Why some defaults are what they are").

It changes the whole process, so only processes genretag owns call it: the CLI
and the Dask workers running genretag's tasks, never the library functions a
user imports. Not the decoding workers either: there it costs far more memory
per worker than the speed it gains.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit: 32 MB
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Serve allocations up to 32 MB from the heap and keep up to 256 MB of its free top.

    Returns True when applied (Linux with glibc), False elsewhere (nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
