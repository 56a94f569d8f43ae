"""A worker function that dies like a segfaulting decoder; in its own light module so the spawned
worker processes that import it start fast."""
import os


def crash_on_three(n: int) -> int:
    if n == 3:
        os._exit(1)
    return n * 10


def always_crash(n: int) -> int:
    os._exit(1)
