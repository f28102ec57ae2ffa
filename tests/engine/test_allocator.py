"""rlan.allocator: after keep_freed_memory, a large freed tensor stays in glibc's heap instead of going back
to the system (so the next step does not fault it in again). Each case runs in a fresh interpreter: the
setting is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlan.allocator import _libc

# Allocates and frees a 64 MiB tensor; reports how much of it was mmapped while alive (glibc's hblkhd)
# and how much free memory the heap holds after the free (fordblks).
PROBE = """
import ctypes, json, os, sys
import torch
from rlan.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory()
before = libc.mallinfo2().hblkhd
x = torch.ones(16 << 20)  # 64 MiB, above glibc's largest dynamic mmap threshold (32 MiB)
mapped = libc.mallinfo2().hblkhd - before
del x
print(json.dumps({"applied": applied, "mapped": mapped, "free_in_heap": libc.mallinfo2().fordblks}))
"""


def probe(**env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_libc() is None, reason="glibc only")
def test_freed_large_tensors_stay_in_the_heap():
    kept = probe()
    assert kept["applied"] and kept["mapped"] == 0 and kept["free_in_heap"] >= 64 << 20
    default = probe(RLAN_KEEP_FREED_MEMORY="0")  # the opt-out: glibc mmaps the block and unmaps it
    assert not default["applied"] and default["mapped"] >= 64 << 20 and default["free_in_heap"] < 64 << 20


# A tensor allocated in another thread; glibc's malloc_stats (on stderr) then lists the arenas in use.
ARENAS = """
import ctypes, threading
import torch
from rlan.allocator import keep_freed_memory

keep_freed_memory()
kept = []
thread = threading.Thread(target=lambda: kept.append(torch.ones(1 << 20)))
thread.start()
thread.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def arenas(**env) -> int:
    out = subprocess.run(
        [sys.executable, "-c", ARENAS], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return sum(line.startswith("Arena ") for line in out.stderr.splitlines())


@pytest.mark.skipif(_libc() is None, reason="glibc only")
def test_every_thread_allocates_from_the_one_arena():
    assert arenas() == 1
    assert arenas(RLAN_KEEP_FREED_MEMORY="0") >= 2  # glibc's default: the thread got an arena of its own
