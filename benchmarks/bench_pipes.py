"""What a decoded image costs to cross a pipe between two processes, as the bulk engine's decode/encode
workers send pixels (tasks/bulk/workers.py): N arrays of SIDE x SIDE x 3 uint8 sent through a
multiprocessing pipe at Linux's default size (64 KiB) and widened (workers.PIPE_BYTES, F_SETPIPE_SZ),
alternated over --rounds; wall time and the CPU of each side per array.

    python benchmarks/bench_pipes.py --count 400 --side 512 --rounds 3
"""
from __future__ import annotations

import argparse
import fcntl
import multiprocessing as mp
import resource
import statistics
import time

import numpy as np

from tasks.bulk.workers import PIPE_BYTES


def send(writer, side: int, count: int) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    for _ in range(count):
        writer.send(pixels)
    writer.send(None)
    used = resource.getrusage(resource.RUSAGE_SELF)
    writer.send(used.ru_utime + used.ru_stime)


def one_run(pipe_bytes: int | None, side: int, count: int) -> tuple[float, float, float]:
    """(wall, receiver CPU, sender CPU) per array, in ms."""
    reader, writer = mp.Pipe(duplex=False)
    if pipe_bytes:
        fcntl.fcntl(reader.fileno(), fcntl.F_SETPIPE_SZ, pipe_bytes)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    sender = mp.get_context("fork").Process(target=send, args=(writer, side, count))
    sender.start()
    while reader.recv() is not None:
        pass
    sender_cpu = reader.recv()
    sender.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    receiver_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall / count * 1e3, receiver_cpu / count * 1e3, sender_cpu / count * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = {"64 KiB (default)": None, f"{PIPE_BYTES >> 10} KiB (widened)": PIPE_BYTES}
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sizes}
    for _ in range(args.rounds):
        for name, pipe_bytes in sizes.items():
            runs[name].append(one_run(pipe_bytes, args.side, args.count))
    print(f"{args.count} arrays of {args.side}x{args.side}x3 uint8 ({args.side * args.side * 3 >> 10} KiB), "
          f"medians of {args.rounds} rounds, ms per array:")
    for name, values in runs.items():
        wall, receiver, sender = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"  pipe {name:<18} wall {wall:.2f}, receiver CPU {receiver:.2f}, sender CPU {sender:.2f}, "
              f"both {receiver + sender:.2f}")


if __name__ == "__main__":
    main()
