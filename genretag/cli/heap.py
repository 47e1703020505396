"""glibc heap settings for long batch runs: reuse freed memory instead of giving it back.

glibc serves a large allocation with its own fresh mmap() and unmaps it on free
(above a threshold that starts at 128 kB), and trims the heap's free top back to
the kernel. A classify run allocates the same multi-megabyte tensors every batch
(a batch's STFT is 3 MB, a timbral conv map 8.5 MB), so each came back as fresh
pages for the kernel to fault in and zero: with the default musicnn, 0.4 of the
network's 2.8 ms per sub-track on 2 cores (the STFT alone 0.97 -> 0.40 ms per
batch). Keeping freed memory in the heap removes that; the main process's peak
RSS did not move (644 vs 646 MB over 300 clips). See bench/README.md, item 20.

It changes the whole process, so only the CLI calls it, not the library
functions a user imports. Not in the decoding workers either: there it gained
4 % of decoding speed and cost ~390 MB of RSS per worker (the 2,000-track
benchmark's decode-only tree went from 0.9 to 1.7 GB).
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
