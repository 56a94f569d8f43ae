"""Where the cores go in a bulk stylize job: why end to end stays under the network alone.

For each --backends runtime (of the network exported to ONNX) and --networks network, on generated
photo-like 512-px JPEGs (bench_stylize.py's), two measurements, --rounds times interleaved:
  alone:  the network on decoded images, the engine's layout (its passes at once), and the CPU
          seconds this process spent per image meanwhile;
  job:    `stylize()` from JPEG files to JPEG files, and per image the CPU seconds of each kind of
          thread: the runtime's own (OpenVINO's streams; native threads that Python did not name),
          the engine's model threads (the conversions around each run, and onnxruntime's
          one-thread runs, which it does on the calling thread), the engine's other threads (its
          loop, the reader, the worker pool's helpers), and the decode/encode worker processes;
          then the rest of the cores' time (idle, or other processes': run it on a quiet machine).
For OpenVINO, whose network runs on threads of its own, the CPU per image of those threads in the
job against alone is what sharing the cores with the engine costs the network beyond its own
seconds (caches, preemption); onnxruntime runs the network on the calling threads, beside the
conversions, so that ratio is not shown for it. Threads are sampled every 0.2 s and once at the end: a thread
that ends before the job does (none of the engine's) is counted up to its last sample.

    python benchmarks/cpu_split.py --count 200 --networks slim --backends onnxruntime openvino --rounds 3
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stylize import end_to_end, generate_jpegs, save_model  # noqa: E402

from stylepipe.devices import cpu_count  # noqa: E402
from tasks.bulk.memory import keep_freed_memory  # noqa: E402

KINDS = ("runtime threads", "model threads", "engine threads", "worker processes")


def alone(model_dir: Path, paths: list[Path], backend: str) -> tuple[float, float, float]:
    """(images/s, CPU ms per image, of which in the runtime's own threads) of the network alone, with
    the engine's passes and threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch
    from PIL import Image

    from stylepipe.hashing import sha256_file
    from tasks.bulk.backends import OnnxNet
    from tasks.bulk.lean import cpu_passes

    passes, threads = cpu_passes(None, None)
    net = OnnxNet(model_dir, sha256_file(model_dir / "model.safetensors"), threads, runtime=backend, passes=passes)
    images = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))[None]).permute(0, 3, 1, 2).float().div(255)
              for p in paths]
    with ThreadPoolExecutor(passes) as pool:
        list(pool.map(net, images[:passes]))  # warm-up
        with ThreadCpu() as threads_cpu:
            cpu, start = time.process_time(), time.perf_counter()
            list(pool.map(net, images))
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    runtime = threads_cpu.by_kind()["runtime threads"]
    return len(images) / seconds, 1000 * cpu / len(images), 1000 * runtime / len(images)


class ThreadCpu:
    """CPU seconds per kind of thread (KINDS) over a `with` block, sampled every 0.2 s."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.first: dict[tuple, float] = {}
        self.last: dict[tuple, float] = {}
        self.names: dict[int, str] = {}
        self.stop, self.started = threading.Event(), threading.Event()

    def _sample(self) -> None:
        import psutil

        # a thread or process first seen after the first sample was born meanwhile: it counts from 0
        born = 0.0 if self.last else None
        for t in self.me.threads():
            if t.id != self.sampler_id:
                used = t.user_time + t.system_time
                self.first.setdefault(("t", t.id), used if born is None else born)
                self.last[("t", t.id)] = used
        self.names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id})
        for child in self.me.children(recursive=True):
            try:
                used = sum(child.cpu_times()[:2])
            except psutil.Error:
                continue
            self.first.setdefault(("p", child.pid), used if born is None else born)  # (the forkserver lives on)
            self.last[("p", child.pid)] = used

    def _run(self) -> None:
        self.sampler_id = threading.get_native_id()
        self._sample()
        self.started.set()
        while not self.stop.wait(0.2):
            self._sample()
        self._sample()

    def __enter__(self) -> "ThreadCpu":
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.started.wait()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def by_kind(self) -> dict[str, float]:
        used = dict.fromkeys(KINDS, 0.0)
        for key, last in self.last.items():
            kind, ident = key
            name = self.names.get(ident)
            if kind == "p":
                used["worker processes"] += last - self.first[key]
            elif name is None:
                used["runtime threads"] += last - self.first[key]
            else:
                used["model threads" if name.startswith("stylize-model") else "engine threads"] += last - self.first[key]
        return used


def job(model_dir: Path, images: Path, out: Path, backend: str, count: int) -> tuple[float, dict[str, float]]:
    """(images/s, CPU ms per image by kind, and the rest of the cores' ms) of one end-to-end job."""
    with ThreadCpu() as cpu:
        start = time.perf_counter()
        rate = end_to_end(model_dir, images, out, None, 2, None, None, backend)[0]
        wall = time.perf_counter() - start
    used = {kind: 1000 * s / count for kind, s in cpu.by_kind().items()}
    used["rest"] = max(0.0, 1000 * wall * cpu_count() / count - sum(used.values()))
    return rate, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--networks", nargs="+", default=["slim"], choices=["slim", "fast", "classic"])
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"],
                        choices=["onnxruntime", "openvino", "openvino-bf16"])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    keep_freed_memory()
    workdir = Path(tempfile.mkdtemp(prefix="stylepipe-cpu-split-"))
    os.environ["XDG_CACHE_HOME"] = str(workdir / "cache")
    try:
        images = workdir / "jpegs"
        paths = generate_jpegs(images, args.count, 512)
        print(f"{args.count} JPEGs of 512x512, {cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
        taken: dict[tuple, list] = {}
        for round_ in range(args.rounds):
            for network in args.networks:
                model = save_model(workdir / f"model-{network}", network)
                for backend in args.backends:
                    end_to_end(model, images, workdir / "warm", None, 2, None, None, backend)  # the export, caches
                    taken.setdefault((network, backend, "alone"), []).append(alone(model, paths, backend))
                    taken.setdefault((network, backend, "job"), []).append(
                        job(model, images, workdir / "out", backend, args.count))
                    print(f"  round {round_ + 1}, {network} {backend}: alone {taken[network, backend, 'alone'][-1][0]:.2f}, "
                          f"job {taken[network, backend, 'job'][-1][0]:.2f} images/s", flush=True)
        print(f"\nmedians of {args.rounds} round(s); CPU ms per image (load average {os.getloadavg()[0]:.2f} at the end)")
        columns = (*KINDS, "rest")
        print(f"{'network':<8} {'backend':<14} {'alone/s':>8} {'job/s':>7} {'job/alone':>9} {'net alone':>9}  "
              + "  ".join(f"{c:>16}" for c in columns) + f"  {'runtime threads alone, job/alone':>32}")
        for network in args.networks:
            for backend in args.backends:
                a_rate = statistics.median(r for r, _, _ in taken[network, backend, "alone"])
                a_cpu = statistics.median(c for _, c, _ in taken[network, backend, "alone"])
                a_runtime = statistics.median(r for _, _, r in taken[network, backend, "alone"])
                j_rate = statistics.median(r for r, _ in taken[network, backend, "job"])
                split = {c: statistics.median(u[c] for _, u in taken[network, backend, "job"]) for c in columns}
                # the network's CPU in the job: OpenVINO's on its own threads (onnxruntime's is mixed into the model threads')
                net = (f"{a_runtime:>8.1f} {split['runtime threads'] / a_runtime:>7.2f}" if backend.startswith("openvino")
                       else f"{'-':>8} {'-':>7}")
                print(f"{network:<8} {backend:<14} {a_rate:>8.2f} {j_rate:>7.2f} {j_rate / a_rate:>9.2f} {a_cpu:>9.1f}  "
                      + "  ".join(f"{split[c]:>16.1f}" for c in columns) + f"  {net:>32}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
