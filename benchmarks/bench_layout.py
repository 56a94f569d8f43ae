"""The engine's CPU layout, measured: images/s of the network alone (bench_stylize.py's ceiling, (a))
for each layout of forward passes at once x threads per pass x batch size, per network and backend,
in interleaved rounds (medians). The engine's default is one pass per core, one thread each, batches
of one (tasks/bulk/lean.py cpu_passes); `stylepipe stylize --parallel-batches P --threads T
--batch-size B` sets another, and `--layout auto` (stylize's default) measures a few on the job's
first batch (tasks/bulk/layout.py). Use this to see whether another layout pays on your machine.

With --engine, also end-to-end jobs (JPEG to JPEG, bench_stylize.py's (b), on the CPU) of the first
network on each backend, per round: `layout: fixed`, then `layout: auto` with nothing remembered (it
measures, given at least tasks/bulk/layout.py's min_inputs(): 108 images on 2 cores, 468 on 16),
then `layout: auto` again (it settles on what the first remembered): images/s and the layout chosen.

    python benchmarks/bench_layout.py --networks slim fast --backends onnxruntime torch --rounds 3
    python benchmarks/bench_layout.py --networks fast --backends onnxruntime --rounds 3 --engine --count 200

The networks have random (seeded) weights; the images are bench_stylize.py's photo-like JPEGs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench_stylize import ceiling, generate_jpegs, save_model
from stylepipe.devices import cpu_count
from tasks.bulk.lean import cpu_passes


def engine_job(model: Path, images: Path, out: Path, backend: str, layout: str) -> tuple[float, str]:
    """Images/s of a stylize job from JPEGs to JPEGs, and the layout its ledger rows name."""
    import time

    from stylepipe.config import StylizeParams
    from tasks.bulk.engine import stylize
    from tasks.bulk.plan import Job, ModelSpec, default_ledger

    shutil.rmtree(out, ignore_errors=True)
    params = StylizeParams(max_size=None, backend=backend, layout=layout, device="cpu")
    job = Job(str(images), out, (ModelSpec(str(model)),), params, default_ledger(out))
    start = time.perf_counter()
    summary = stylize(job, progress=False)
    seconds = time.perf_counter() - start
    assert summary.done == summary.outputs and summary.failed == 0, list(summary.lines())
    return summary.outputs / seconds, summary.run.device


def layouts_for(cores: int, default: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(passes, threads per pass, batch): every exact split of the cores into passes x threads, at
    batch sizes 1, 2 and 4, and the engine's default (which caps its passes, so may not split exactly)."""
    splits = [(p, cores // p) for p in range(1, cores + 1) if cores % p == 0]
    layouts = [(p, t, b) for b in (1, 2, 4) for p, t in splits]
    return layouts if default in layouts else [default, *layouts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=64, help="images timed per layout (default 64)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--networks", nargs="+", default=["slim", "fast"], choices=["slim", "fast", "classic"])
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"], choices=["torch", "onnxruntime"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", action="store_true", help="also end-to-end jobs with layout fixed and auto")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="stylepipe-layout-"))
    os.environ["XDG_CACHE_HOME"] = str(workdir / "cache")  # exports of this run's own
    try:
        paths = generate_jpegs(workdir / "jpegs", args.count, args.size)
        models = {n: save_model(workdir / f"model-{n}", n) for n in args.networks}
        default_layout = (*cpu_passes(None, None), 1)
        layouts = layouts_for(cpu_count(), default_layout)
        rates: dict[tuple, list[float]] = {}
        jobs: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            if args.engine:
                (workdir / "cache" / "stylepipe" / "layouts.json").unlink(missing_ok=True)
                for backend in args.backends:
                    for name, layout in (("fixed", "fixed"), ("auto, measuring", "auto"), ("auto, remembered", "auto")):
                        rate, device = engine_job(models[args.networks[0]], workdir / "jpegs", workdir / "out", backend, layout)
                        jobs.setdefault((backend, name), []).append(rate)
                        print(f"  round {round_ + 1}, {args.networks[0]} on {backend}, end to end, layout {name}: "
                              f"{rate:.2f} images/s ({device})", flush=True)
            for network, backend, layout in [(n, b, lay) for n in args.networks for b in args.backends for lay in layouts]:
                passes, threads, batch = layout
                rate = ceiling(models[network], paths, batch, passes, threads, backend)
                rates.setdefault((network, backend, layout), []).append(rate)
                print(f"  round {round_ + 1}, {network} on {backend}, {passes} x {threads} x {batch}: {rate:.2f} images/s",
                      flush=True)
        print(f"\n{args.count} images of {args.size} px, {cpu_count()} CPUs, medians of {args.rounds} rounds; "
              f"against the default layout ({' x '.join(map(str, default_layout))})")
        print(f"{'network':<8} {'backend':<12} {'passes x threads x batch':>25} {'images/s':>9} {'vs default':>11}")
        for network in args.networks:
            for backend in args.backends:
                default = statistics.median(rates[(network, backend, default_layout)])
                for layout in layouts:
                    rate = statistics.median(rates[(network, backend, layout)])
                    print(f"{network:<8} {backend:<12} {' x '.join(map(str, layout)):>25} {rate:>9.2f} "
                          f"{rate / default:>11.2f}")
        for backend in args.backends if args.engine else []:
            fixed = statistics.median(jobs[(backend, "fixed")])
            for name in ("fixed", "auto, measuring", "auto, remembered"):
                rate = statistics.median(jobs[(backend, name)])
                print(f"{args.networks[0]:<8} {backend:<12} {'end to end, ' + name:>25} {rate:>9.2f} {rate / fixed:>11.2f}"
                      " (vs fixed)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
