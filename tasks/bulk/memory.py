"""Keep freed memory for reuse instead of giving it back to the kernel.

glibc's malloc serves every block above its mmap threshold (at most 32 MB) with a fresh mmap and
unmaps it when freed, and gives back the free top of each thread's arena. A network's activations
on a large image or tile are such blocks, so every forward pass faults every page of them in again:
a 1280-px forward pass of the fast network takes 2.0 s with 0.3 page faults per pixel against
0.95 s without them, and a 4096-px image cost 12 million faults and 25 s of system time
(benchmarks/bench_stylize.py --large prints the per-pixel cost at 512 px and at a large size).
The price: the process keeps its peak memory until it exits.
"""
from __future__ import annotations

import ctypes
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
NEVER_TRIM = -1   # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"


def keep_freed_memory() -> bool:
    """One arena (the per-thread ones are heaps that cannot hold a 100-MB block and are shrunk when
    freed), no mmap for large blocks, no trimming of the heap's top. Call it before the threads that
    run the networks start. False where malloc is not glibc's (the settings are then not made)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM))
    return all(mallopt(param, value) == 1 for param, value in settings)
