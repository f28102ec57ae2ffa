"""glibc's malloc, told to keep the memory a training step frees for the next step.

By default glibc serves large blocks with mmap and returns freed memory above a threshold to the system,
so every step faults much of the same activations in again, page by page (expensive on a VM). With a
fixed large mmap threshold and no trimming, freed blocks stay in the heap and are reused; the peak RSS is
the same, but the process keeps it until it exits (figures in docs/performance.md). One arena serves every
thread: the canvas lanes' threads (rlan/model/lanes.py) would each get one of their own, whose heaps
glibc trims and grows again (3x the page faults and 40% more peak RSS on the side-by-side's batches,
docs/performance.md). A caching allocator
(jemalloc, tcmalloc) would do the same, but neither installs with pip. RLAN_KEEP_FREED_MEMORY=0 leaves
glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap (every tensor of a step here)
_done = False


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; True when they are set (glibc, not opted out)."""
    global _done
    if _done:
        return True
    libc = _libc()
    if libc is None or os.environ.get("RLAN_KEEP_FREED_MEMORY", "1") == "0":
        return False
    # The mmap threshold first: fixing the trim threshold alone also fixes the mmap threshold at its
    # 128 KiB start, which sends every large block to mmap (the step ran at half speed that way).
    if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False
    _done = bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(libc.mallopt(_M_ARENA_MAX, 1))
    return _done
