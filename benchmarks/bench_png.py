"""The bulk engine's PNG writer (tasks/bulk/png.py: Up filter, zlib run-length strategy at level 1)
against Pillow at compress_level 1 (the engine's writer before session 21) and 6 (Pillow's default),
on the same images in one run, the writers alternated over --rounds: ns per pixel (median) and bits
per pixel. Every file is read back and compared with its pixels.

    python benchmarks/bench_png.py ../shared/images/content/*.jpg --rounds 3
    python benchmarks/bench_png.py --photo-like 40 --side 256

Images: the given files (any format Pillow reads, as RGB), and/or --photo-like N generated images
(bench_stylize.photo_like: colour fields plus grain, as the other benchmarks use).
"""
from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench_stylize import photo_like  # this script's folder is on sys.path when it runs
from tasks.bulk.png import write_png


def pillow(level: int):
    def write(file, pixels: np.ndarray) -> None:
        Image.fromarray(pixels).save(file, "PNG", compress_level=level)
    return write


WRITERS = {"pillow, level 1": pillow(1), "pillow, level 6": pillow(6), "stylepipe png.py": write_png}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--photo-like", type=int, default=0, help="generated images to add")
    parser.add_argument("--side", type=int, default=256, help="the generated images' side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = [np.asarray(Image.open(p).convert("RGB")) for p in args.images]
    rng = np.random.default_rng(0)
    images += [photo_like(rng, args.side) for _ in range(args.photo_like)]
    if not images:
        parser.error("no images: give files or --photo-like N")
    pixels = sum(a.shape[0] * a.shape[1] for a in images)
    seconds: dict[str, list[float]] = {name: [] for name in WRITERS}
    sizes: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, write in WRITERS.items():
            size, start = 0, time.perf_counter()
            for a in images:
                out = io.BytesIO()
                write(out, a)
                size += out.tell()
            seconds[name].append(time.perf_counter() - start)
            sizes[name] = size
    for name, write in WRITERS.items():  # (untimed) every writer's files decode to their pixels
        for a in images:
            out = io.BytesIO()
            write(out, a)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(out.getvalue()))), a), name
    print(f"{len(images)} images, {pixels / len(images) / 1e6:.2f} Mpx each on average, {args.rounds} rounds")
    base = statistics.median(seconds["pillow, level 1"])
    for name in WRITERS:
        median = statistics.median(seconds[name])
        print(f"  {name:18s} {median / pixels * 1e9:7.1f} ns/px ({base / median:.2f}x pillow level 1), "
              f"{sizes[name] * 8 / pixels:6.2f} bits/px")


if __name__ == "__main__":
    main()
