"""The dataflow process's C heap (glibc's malloc). Its resident memory was a fifth larger than what it held: a
snapshot every 30 s builds and frees 100+ MB of buffers (each pane's msgpack, then Bytewax's pickle), and once
glibc has freed one large mapped buffer it raises its mmap threshold (up to 32 MB), so the next ones come from the
heap and their freed pages stay with the process. Measured on the running dataflow at 16 minutes of 2,000
events/s: 1.12 GB resident, 0.92 GB after malloc_trim(0), back to 1.05 GB two minutes later. Fixing the threshold
is not enough on its own (the state's own small allocations come and go too): the heap is trimmed as well.

Elsewhere than glibc (musl, macOS) both calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept fixed: buffers above it are mapped and unmapped when freed
TRIM_EVERY_S = 10.0

_libc: ctypes.CDLL | None = None
try:
    _path = ctypes.util.find_library("c")
    if _path is not None:
        _lib = ctypes.CDLL(_path)
        if hasattr(_lib, "mallopt") and hasattr(_lib, "malloc_trim"):
            _libc = _lib
except OSError:
    pass
_next_trim = 0.0


def fix_mmap_threshold() -> bool:
    """Keep large buffers out of the heap for the life of the process (setting the threshold turns glibc's
    raising of it off). Whether it took."""
    return _libc is not None and _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def trim() -> bool:
    """Give the heap's free pages back to the system (malloc_trim(0); about 25 ms over a 750 MB heap), at most
    every TRIM_EVERY_S whoever asks: every publish does (each partition's and shard's, every second or so).
    Not tied to the snapshot: its buffers are freed once Bytewax has written them, after our code returns
    (trimmed as each snapshot began, the process still held 180 MB that a trim at a random moment gave back).
    Whether it ran."""
    global _next_trim
    now = time.monotonic()
    if _libc is None or now < _next_trim:
        return False
    _next_trim = now + TRIM_EVERY_S
    _libc.malloc_trim(0)
    return True
