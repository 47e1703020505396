"""genretag.pipeline.heap: large buffers come from the heap (reused) instead of fresh mmap()s."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                              "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from genretag.pipeline.heap import keep_freed_memory
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
buf = bytearray(8 << 20)  # 8 MB: above glibc's default mmap threshold (128 kB)
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_large_buffers_come_from_the_heap_once_tuned():
    def mmapped(mode: str) -> int:
        r = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
        if "mallinfo2" in r.stderr:
            pytest.skip("C library without mallinfo2 (not glibc >= 2.33)")
        assert r.returncode == 0, r.stderr
        return int(r.stdout)

    assert mmapped("default") >= 8 << 20  # glibc's default: its own mmap, unmapped on free
    assert mmapped("tuned") == 0
