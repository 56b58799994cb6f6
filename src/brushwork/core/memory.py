"""Process memory: let freed blocks be reused within a job, give them back after it (glibc's
malloc; no PyTorch import, so the CLI calls it first).

PyTorch allocates every tensor with malloc. glibc serves blocks over 32 MiB (a 512x512 map
of 64 channels is 64 MiB) with a fresh mmap and returns them to the system when freed, so
the next tensor of that size faults every page in again, zero-filled: at 512 px that is a
tenth of a gatys step and a quarter of an avatar run. With :func:`keep_freed_memory` freed
blocks stay in the heap for the next tensor; the price is a higher peak (about a fifth more
at 512 px: blocks kept apart by small allocations are not merged at once), which
:func:`give_back_freed_memory` returns between jobs."""
from __future__ import annotations

import ctypes
import os
from functools import lru_cache

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 1 << 30


@lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the system:
    no mmap for large blocks, no heap trimming below :data:`KEEP_FREED_BYTES`, and one arena
    for every thread (a thread's own arena mmaps any block over 64 MiB). Process-wide and
    once; the CLI (but for memory-planned runs: ``--tile``, ``--max-memory``) and the studio
    call it at start, a program embedding brushwork may call it too.
    ``BRUSHWORK_MALLOC=system`` leaves malloc as it is. Returns whether it was applied (False
    off glibc)."""
    if os.environ.get("BRUSHWORK_MALLOC", "").strip().lower() == "system":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(k, v) for k, v in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0),
                                          (M_TRIM_THRESHOLD, KEEP_FREED_BYTES)))


def give_back_freed_memory() -> bool:
    """Return the heap's free memory (the holes between live blocks too) to the system:
    glibc's ``malloc_trim(0)``, for a long-running process between jobs. False off glibc."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
