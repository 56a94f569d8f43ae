"""GPU throughput of bulk stylization at 1024 px (issue 16's GPU part), each figure from this run:

  (a) the network alone: a uint8 batch already on the GPU -> float -> network -> uint8, per network,
      precision (fp16 autocast with channels_last, as the engine runs it; bf16; fp32) and batch,
      eager; then, for --graph-networks, the same captured once as a CUDA graph and replayed, and
      (last, (e), with --compile) torch.compile'd;
  (b) the codecs: Pillow's JPEG decode and encode on one core and on every core (processes), and
      nvJPEG's on the GPU through torchvision.io (batched decode_jpeg / encode_jpeg);
  (c) stylepipe end to end: tasks/bulk/engine.py's stylize() with device cuda, JPEG files to JPEG
      files (listing, decode workers, batching, the network, encode workers, the ledger), with the
      JPEG codec in the workers (codec pillow) or on the GPU (codec device), the share of the time
      the network was busy, the cores the engine's own process used, and the rate once outputs
      flow (without the job's start); flags per job in --engine-layouts (compile, onestream,
      switch=S, sample: where the threads spend their time);
  (d) a plain GPU-codec loop: file bytes read by threads -> decode_jpeg on the GPU -> the network
      -> encode_jpeg on the GPU -> bytes written by threads (temp file + rename), one batch at a time;
  (f) the engine's own process, CPU per image, codec pillow against device, with the network and
      the device's codec replaced by free stand-ins (runs on a CPU too: --skip a b c d e).

    python benchmarks/bench_gpu.py --count 2000 --size 1024 --json /tmp/gpu.json

Inputs: --unique photo-like JPEGs (bench_stylize.photo_like, quality 90) copied to --count files.
The networks have random (seeded) weights: throughput does not depend on training. Without CUDA it
runs on the CPU at whatever size it is given (a smoke test of the script itself).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench_stylize import generate_jpegs, save_model  # this script's folder is on sys.path when it runs

RESULTS: dict = {}


def log(*parts) -> None:
    print(*parts, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, per_call: int, device: torch.device, seconds: float = 2.0, warmup: int = 3) -> float:
    """Items/s of fn() (per_call items a call): the median of 5 timed spans of ~seconds/5 each."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - start, 1e-4)
    calls = max(1, round(seconds / 5 / once))
    spans = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        spans.append((time.perf_counter() - start) / calls)
    return per_call / statistics.median(spans)


# --------------------------------------------------------------------------- (a) network alone


def engine_step(net, precision: str, device: torch.device):
    """uint8 NHWC on the device -> uint8 NHWC, as the engine's runner does it (tasks/bulk/runners.py)."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def step(x8: torch.Tensor) -> torch.Tensor:
        x = x8.permute(0, 3, 1, 2).float().div_(255)
        if dtype is None:
            y = net(x)
        else:
            with torch.autocast(device.type, dtype=dtype):
                y = net(x)
        return (y.float() * 255 + 0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return step


def network_alone(args, device: torch.device, models: dict[str, Path]) -> None:
    from models.weights import load_model

    out = RESULTS["network_alone"] = {}
    for network, model_dir in models.items():
        net, _ = load_model(model_dir, device)
        net.eval()
        for precision in args.precisions:
            lay = net.to(memory_format=torch.channels_last) if precision != "fp32" else net.to(memory_format=torch.contiguous_format)
            for batch in args.batches:
                x8 = torch.randint(0, 256, (batch, args.size, args.size, 3), dtype=torch.uint8, device=device)
                step = engine_step(lay, precision, device)
                try:
                    with torch.inference_mode():
                        r = rate(lambda: step(x8), batch, device)
                except torch.OutOfMemoryError:
                    r = float("nan")
                    torch.cuda.empty_cache()
                out[f"{network} {precision} batch {batch} eager"] = r
                log(f"(a) {network:7s} {precision} batch {batch:3d} eager        {r:9.1f} img/s")
        if device.type == "cuda" and network in args.graph_networks:
            net = net.to(memory_format=torch.channels_last)
            for batch in args.graph_batches:
                out[f"{network} fp16 batch {batch} cuda graph"] = r = cuda_graph_rate(net, batch, args.size, device)
                log(f"(a) {network:7s} fp16 batch {batch:3d} cuda graph   {r:9.1f} img/s")
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()


def cuda_graph_rate(net, batch: int, size: int, device: torch.device) -> float:
    step = engine_step(net, "fp16", device)
    static = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step(static)
        fresh = torch.randint(0, 256, static.shape, dtype=torch.uint8, device=device)
        static.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        check = step(fresh)
        diff = (out.int() - check.int()).abs().max().item()
        log(f"    cuda graph replay vs eager: max difference {diff} levels")
        return rate(graph.replay, batch, device)


def compiled(args, device: torch.device, models: dict[str, Path]) -> None:
    """(a), last: --graph-networks torch.compile'd (default mode), at the first --graph-batches."""
    from models.weights import load_model

    batch = args.graph_batches[0]
    for network in args.graph_networks:
        net = load_model(models[network], device)[0].eval().to(memory_format=torch.channels_last)
        r = RESULTS.setdefault("network_alone", {})[f"{network} fp16 batch {batch} compiled"] = compiled_rate(net, batch, args.size, device)
        log(f"(a) {network:7s} fp16 batch {batch:3d} torch.compile {r:9.1f} img/s")


def compiled_rate(net, batch: int, size: int, device: torch.device) -> float:
    start = time.perf_counter()
    compiled = torch.compile(net)
    step = engine_step(compiled, "fp16", device)
    x8 = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    with torch.inference_mode():
        step(x8)
        torch.cuda.synchronize()
        log(f"    torch.compile: first call {time.perf_counter() - start:.1f} s")
        return rate(lambda: step(x8), batch, device)


# --------------------------------------------------------------------------- (b) codecs


def _pil_round(path: str, quality: int) -> tuple[float, float]:
    import io

    from PIL import Image

    start = time.perf_counter()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    mid = time.perf_counter()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return mid - start, time.perf_counter() - mid


def codecs(args, device: torch.device, paths: list[Path]) -> None:
    out = RESULTS["codecs"] = {}
    one = [_pil_round(str(p), args.quality) for p in paths[:40]]
    out["pil decode ms, one core"] = statistics.median(d for d, _ in one) * 1e3
    out["pil encode ms, one core"] = statistics.median(e for _, e in one) * 1e3
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_pil_round, map(str, paths[:cores]), [args.quality] * cores))
        start = time.perf_counter()
        n = min(len(paths), 50 * cores)
        list(pool.map(_pil_round, map(str, paths[:n]), [args.quality] * n, chunksize=4))
        out[f"pil decode+encode img/s, {cores} processes"] = n / (time.perf_counter() - start)
    for k, v in out.items():
        log(f"(b) {k:40s} {v:9.2f}")
    if device.type != "cuda":
        return
    from torchvision.io import decode_jpeg, encode_jpeg

    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths[:256]]
    for batch in args.codec_batches:
        chunk = (datas * (batch // len(datas) + 1))[:batch]
        r = rate(lambda: decode_jpeg(chunk, device=device), batch, device)
        out[f"nvjpeg decode img/s, batch {batch}"] = r
        images = decode_jpeg(chunk, device=device)
        r = rate(lambda: [t.cpu() for t in encode_jpeg(images, quality=args.quality)], batch, device)
        out[f"nvjpeg encode img/s, batch {batch} (bytes to host)"] = r
        log(f"(b) nvjpeg batch {batch:3d}: decode {out[f'nvjpeg decode img/s, batch {batch}']:8.1f} img/s, "
            f"encode {r:8.1f} img/s")
    a = decode_jpeg(datas[0], device=device).cpu()
    b = decode_jpeg(datas[0])
    log(f"    nvjpeg vs libjpeg decode of one image: max {(a.int() - b.int()).abs().max().item()} levels, "
        f"mean {(a.float() - b.float()).abs().mean().item():.3f}")


# --------------------------------------------------------------------------- (c) the engine


@dataclass(frozen=True)
class EngineJob:
    """One (c) job, from --engine-layouts' \"workers,passes,batch,codec[,FLAG...]\"."""
    workers: int
    passes: int
    batch: int
    codec: str
    compile: bool = False
    one_stream: bool = False
    switch: float | None = None
    sample: bool = False

    @classmethod
    def parse(cls, text: str) -> "EngineJob":
        workers, passes, batch, jpeg_codec, *flags = text.split(",")
        switch = next((float(f.split("=")[1]) for f in flags if f.startswith("switch=")), None)
        unknown = set(flags) - {"compile", "onestream", "sample"} - {f for f in flags if f.startswith("switch=")}
        if unknown:
            raise SystemExit(f"--engine-layouts {text}: unknown flags {sorted(unknown)}")
        return cls(int(workers), int(passes), int(batch), jpeg_codec, "compile" in flags, "onestream" in flags,
                   switch, "sample" in flags)

    @property
    def label(self) -> str:
        extras = [name for name, on in (("compiled", self.compile), ("one stream", self.one_stream),
                                        ("sampled", self.sample)) if on]
        if self.switch is not None:
            extras.append(f"switch {self.switch * 1e3:g} ms")
        return f"{self.workers} workers, {self.passes} passes, batch {self.batch}, codec {self.codec}" + \
            "".join(f", {e}" for e in extras)


class Sampler:
    """Where threads spend their wall time: every `every` seconds, the innermost frame of each
    model thread (and of the main thread) that lies in tasks/ (the engine, its runners), counted by
    function and line: a network's whole forward pass counts at the runner's line that called it. A
    thread blocked in C (a CUDA wait, a codec, the GIL) is counted at the line that called it."""

    def __init__(self, every: float = 0.002):
        self.every, self.counts, self.samples = every, {}, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.root = str(Path(__file__).resolve().parents[1] / "tasks") + os.sep

    def __enter__(self) -> "Sampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        names = {}
        while not self.stop.wait(self.every):
            names.update({t.ident: t.name for t in threading.enumerate()})
            self.samples += 1
            for ident, frame in sys._current_frames().items():
                name = names.get(ident, "")
                kind = "model" if name.startswith("stylize-model") else "main" if name == "MainThread" else None
                if kind is None:
                    continue
                where = frame
                while where is not None and not where.f_code.co_filename.startswith(self.root):
                    where = where.f_back
                if where is None:
                    key = (kind, "(outside the project)")
                else:
                    key = (kind, f"{Path(where.f_code.co_filename).name}:{where.f_lineno} {where.f_code.co_name}")
                self.counts[key] = self.counts.get(key, 0) + 1

    def report(self, top: int = 12) -> dict[str, list]:
        out = {}
        for kind in ("model", "main"):
            rows = sorted(((n, where) for (k, where), n in self.counts.items() if k == kind), reverse=True)
            total = sum(n for n, _ in rows) or 1
            out[kind] = [(where, round(n / total, 3)) for n, where in rows[:top]]
            log(f"    sampled {kind} thread(s), {total} samples:")
            for where, share in out[kind]:
                log(f"      {share:6.1%}  {where}")
        return out


def engine(args, device: torch.device, model_dir: Path, source: Path, work: Path) -> None:
    """(c). With --keep DIR, each job's first outputs are copied there (to look at); every job's
    outputs are compared with the first job's (max and mean absolute difference, in levels) and
    their total bytes reported."""
    import psutil
    from PIL import Image

    from stylepipe.config import StylizeParams
    from tasks.bulk import runners
    from tasks.bulk.engine import stylize
    from tasks.bulk.plan import Job, ModelSpec, default_ledger

    out = RESULTS.setdefault("engine", {})
    me = psutil.Process()
    first: dict[str, np.ndarray] = {}
    default_switch = sys.getswitchinterval()
    for n, spec in enumerate(args.engine_layouts):
        target = work / f"out-engine-{n}"
        shutil.rmtree(target, ignore_errors=True)
        params = StylizeParams(max_size=None, batch_size=spec.batch, workers=spec.workers,
                               parallel_batches=spec.passes, device=device.type, backend="torch",
                               quality=args.quality, codec=spec.codec, compile=spec.compile)
        job = Job(str(source), target, (ModelSpec(str(model_dir)),), params, default_ledger(target))
        runners.CUDA_STREAM_PER_PASS = not spec.one_stream
        sys.setswitchinterval(spec.switch or default_switch)
        sampler = Sampler() if spec.sample else contextlib.nullcontext()
        try:
            cpu0 = me.cpu_times()
            start = time.perf_counter()
            with sampler:
                summary = stylize(job, progress=False)
            seconds = time.perf_counter() - start
            cpu1 = me.cpu_times()
        finally:
            runners.CUDA_STREAM_PER_PASS = True
            sys.setswitchinterval(default_switch)
        main_cores = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / seconds
        ok = summary.done == summary.outputs and summary.failed == 0
        label = f"job {n}: {spec.label}"  # (a layout may be run twice)
        out[label] = {"img_s": summary.outputs / seconds, "seconds": seconds, "network_busy": summary.run.network_busy,
                      "main_process_cores": main_cores, "ok": ok}
        log(f"(c) engine {label:34s} {summary.outputs / seconds:8.1f} img/s ({seconds:.1f} s)  network busy "
            f"{summary.run.network_busy:.0%}, main process {main_cores:.2f} cores, ok {ok}")
        if spec.sample:
            out[label]["sampled"] = sampler.report()
        if not ok:
            log("    ", list(summary.lines()))
        names = sorted(p.name for p in target.glob("*.jpg"))
        out[label]["output_mb"] = sum((target / n).stat().st_size for n in names) / 2**20
        # the rate once outputs flow (first to last output file's time): without the start, the
        # first batch's cuDNN tuning or compiling and the last batch's wait
        written = sorted((target / n).stat().st_mtime for n in names)
        if len(written) > 1 and written[-1] > written[0]:
            out[label]["flowing_img_s"] = (len(written) - 1) / (written[-1] - written[0])
            log(f"    once outputs flow: {out[label]['flowing_img_s']:.1f} img/s over {written[-1] - written[0]:.1f} s")
        diffs = []
        for name in names[:8]:
            pixels = np.asarray(Image.open(target / name), np.int16)
            if name in first:
                diffs.append(np.abs(pixels - first[name]))
            else:
                first[name] = pixels
        if diffs:
            out[label]["vs_first_job_levels"] = (int(max(d.max() for d in diffs)), float(np.mean([d.mean() for d in diffs])))
        log(f"    outputs {out[label]['output_mb']:.1f} MB; against the first job's: {out[label].get('vs_first_job_levels')}")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name in names[:args.keep_count]:
                shutil.copyfile(target / name, args.keep / f"job{n}-{spec.codec}{'-compiled' if spec.compile else ''}-{name}")
        shutil.rmtree(target, ignore_errors=True)


def engine_alone(args, device: torch.device, model_dir: Path, source: Path, work: Path) -> None:
    """(f) the engine's own process, per image, with the codec in the workers (pillow) and on the
    device (device), the network and the device's codec replaced by free stand-ins (a result is its
    input; a JPEG's output is its own bytes): what the process that moves pixels costs by itself,
    on any machine. Rounds alternate the two."""
    import psutil

    from stylepipe.config import StylizeParams
    from tasks.bulk import runners
    from tasks.bulk.engine import stylize
    from tasks.bulk.plan import Job, ModelSpec, default_ledger

    saved = runners.StyleModels.stylize, runners.StyleModels.stylize_jpegs
    runners.StyleModels.stylize = lambda self, batch: [batch]
    runners.StyleModels.stylize_jpegs = lambda self, datas, shape, quality: [list(datas)]
    out = RESULTS["engine_alone_ms_per_image"] = {"pillow": [], "device": []}
    me = psutil.Process()
    try:
        for _ in range(args.rounds):
            for jpeg_codec in ("pillow", "device"):
                target = work / f"out-alone-{jpeg_codec}"
                shutil.rmtree(target, ignore_errors=True)
                params = StylizeParams(max_size=None, batch_size=16, workers=args.alone_workers, parallel_batches=1,
                                       device="cpu", backend="torch", quality=args.quality, codec=jpeg_codec)
                job = Job(str(source), target, (ModelSpec(str(model_dir)),), params, default_ledger(target))
                cpu0, start = me.cpu_times(), time.perf_counter()
                summary = stylize(job, progress=False)
                seconds, cpu1 = time.perf_counter() - start, me.cpu_times()
                ms = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / summary.outputs * 1e3
                out[jpeg_codec].append(ms)
                log(f"(f) engine alone, codec {jpeg_codec:6s}: {summary.outputs / seconds:7.1f} img/s, its own "
                    f"process {ms:.2f} ms of CPU per image")
                shutil.rmtree(target, ignore_errors=True)
    finally:
        runners.StyleModels.stylize, runners.StyleModels.stylize_jpegs = saved


# --------------------------------------------------------------------------- (d) a GPU-codec loop


def gpu_codec_loop(args, device: torch.device, model_dir: Path, paths: list[Path], work: Path) -> None:
    from torchvision.io import decode_jpeg, encode_jpeg

    from models.weights import load_model

    net, _ = load_model(model_dir, device)
    net = net.eval().to(memory_format=torch.channels_last)
    target = work / "out-gpu-loop"
    target.mkdir(parents=True, exist_ok=True)
    batch = args.loop_batch

    def read(path: Path) -> torch.Tensor:
        return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)

    def write(name: str, data: torch.Tensor) -> None:
        tmp = target / f".{name}.tmp"
        tmp.write_bytes(data.numpy().tobytes())
        os.replace(tmp, target / name)

    def run(chunk_datas):
        images = decode_jpeg(chunk_datas, device=device)
        x = torch.stack(images).float().div_(255).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            y = net(x)
        y8 = (y.float() * 255 + 0.5).clamp_(0, 255).to(torch.uint8)
        return [t.cpu() for t in encode_jpeg(list(y8), quality=args.quality)]

    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    with ThreadPoolExecutor(args.io_threads) as io, torch.inference_mode():
        run([read(p) for p in chunks[0]])  # warm-up: cuDNN picks its kernels, nvJPEG its handles
        sync(device)
        start = time.perf_counter()
        pending = [io.map(read, c) for c in chunks[:2]]
        writes = []
        for i, chunk in enumerate(chunks):
            datas = list(pending.pop(0))
            if i + 2 < len(chunks):
                pending.append(io.map(read, chunks[i + 2]))
            encoded = run(datas)
            writes += [io.submit(write, p.name, e) for p, e in zip(chunk, encoded)]
        for w in writes:
            w.result()
        seconds = time.perf_counter() - start
    RESULTS["gpu_codec_loop_img_s"] = len(paths) / seconds
    log(f"(d) GPU-codec loop, batch {batch}, {args.io_threads} I/O threads: {len(paths) / seconds:8.1f} img/s")
    shutil.rmtree(target, ignore_errors=True)


# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--unique", type=int, default=64, help="distinct JPEGs among the --count files")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--quality", type=int, default=92, help="of the outputs (the engine's default)")
    ap.add_argument("--networks", nargs="+", default=["slim", "fast", "classic"])
    ap.add_argument("--precisions", nargs="+", default=["fp16", "bf16", "fp32"])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--graph-networks", nargs="*", default=["fast"])
    ap.add_argument("--graph-batches", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--codec-batches", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--engine-network", default="fast")
    ap.add_argument("--engine-layouts", nargs="+",
                    default=["14,1,16,pillow", "14,2,16,pillow", "14,1,16,device", "14,2,16,device"],
                    help="workers,passes,batch,codec[,FLAG...] of each engine job (StylizeParams' codec); "
                         "flags: compile (StylizeParams.compile), onestream (every pass on the default "
                         "stream: runners.CUDA_STREAM_PER_PASS off), switch=SECONDS (the interpreter's "
                         "thread switch interval, sys.setswitchinterval; 0.005 by default), sample "
                         "(where the model threads and the main thread spend their time, by sampling)")
    ap.add_argument("--photos", type=Path, help="JPEGs (of --size, square) to copy to --count files instead of generated ones")
    ap.add_argument("--engine-model", type=Path, help="a trained model folder for (c), instead of a random network")
    ap.add_argument("--keep", type=Path, help="copy each (c) job's first --keep-count outputs here")
    ap.add_argument("--keep-count", type=int, default=2)
    ap.add_argument("--loop-batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternated rounds of (f)")
    ap.add_argument("--alone-workers", type=int, default=2, help="decode/encode workers of (f)")
    ap.add_argument("--io-threads", type=int, default=8)
    ap.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c", "d", "e", "f"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    args.engine_layouts = [EngineJob.parse(s) for s in args.engine_layouts]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    RESULTS.update(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                   torch=torch.__version__, cores=os.cpu_count(), size=args.size, count=args.count)
    log(f"device {RESULTS['device']}, torch {torch.__version__}, {os.cpu_count()} cores")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        unique = sorted(args.photos.glob("*.jpg")) if args.photos else generate_jpegs(work / "unique", args.unique, args.size)
        source = work / "photos"
        source.mkdir(exist_ok=True)
        paths = []
        for i in range(args.count):
            path = source / f"img-{i:06d}.jpg"
            if not path.exists():
                shutil.copyfile(unique[i % len(unique)], path)
            paths.append(path)
        models = {n: save_model(work / f"model-{n}", n) for n in args.networks}
        steps = [("a", lambda: network_alone(args, device, models)),
                 ("b", lambda: codecs(args, device, paths)),
                 ("c", lambda: engine(args, device, args.engine_model or models[args.engine_network], source, work)),
                 ("d", lambda: gpu_codec_loop(args, device, models[args.engine_network], paths, work)),
                 ("e", lambda: compiled(args, device, models)),
                 ("f", lambda: engine_alone(args, device, models[args.engine_network], source, work))]
        for name, step in steps:
            if name in args.skip or (name in "de" and device.type != "cuda") or (name == "e" and not args.compile):
                continue
            try:
                step()
            except Exception as e:  # one part's failure must not cost the others' figures
                RESULTS[f"error {name}"] = repr(e)
                log(f"({name}) FAILED: {e!r}")
                import traceback
                traceback.print_exc()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")
    log(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
