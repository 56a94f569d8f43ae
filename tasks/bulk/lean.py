"""Image networks on onnxruntime without importing PyTorch: a small job's start-up.

`import torch` costs 1-1.5 s on a quiet 2-core machine and 6-8 s on a busy one, more than
stylizing one 512-px image. A job whose every model is an exported johnson network on the CPU, on
backend `onnxruntime` (or `auto` that remembers choosing it), with its ONNX export already cached
(the first job makes it, with PyTorch), runs here instead of runners.StyleModels: the same ONNX
session, the same padding, colour preservation, strength and rounding, in numpy. An image large
enough to need tiles brings in PyTorch for that image alone (tiling hooks the networks' norms).
A job with a texture scale (StylizeParams.texture_scale, work_size) takes the torch path.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from stylepipe.config import StylizeParams
from stylepipe.devices import cpu_count, surely_no_cuda
from tasks.bulk import backends
from tasks.bulk.plan import Job, ModelSpec, weights_sha256
from tasks.data.images import MIN_SIDE

# The engine's CPU layout (cpu_passes: runners.configure_parallelism calls it; default_batch_size).
# On 2 AVX2 cores one image per pass beat batches of 4 for both networks (its activations stay in
# cache).
MAX_AUTO_PARALLEL = 8  # beyond this, more cores go to threads per pass (memory: one batch per pass)
CPU_BATCH = 1
# ITU-R BT.601 luma: in YCbCr, changing Y alone moves R, G and B by the same amount.
LUMA = (0.299, 0.587, 0.114)


def cpu_passes(parallel_batches: int | None, threads: int | None) -> tuple[int, int]:
    """(forward passes at once, threads per pass) on this CPU: the one formula, torch-free
    (runners.configure_parallelism applies it to PyTorch). By default one pass per core (at most
    MAX_AUTO_PARALLEL), the cores left over shared out as threads."""
    cores = cpu_count()
    parallel = parallel_batches or min(cores, MAX_AUTO_PARALLEL)
    return parallel, threads or max(1, cores // parallel)


def cpu_layout(params: StylizeParams) -> tuple[int, int, int]:
    """(forward passes at once, threads per pass, batch size) on this CPU."""
    return (*cpu_passes(params.parallel_batches, params.threads), params.batch_size or CPU_BATCH)


def lean_models(job: Job, hashed: dict[str, str] | None = None) -> LeanModels | None:
    """The torch-free runner for this job, or None when it needs PyTorch (see the module doc).
    hashed: the weights' sha256 by model folder, filled in here for the runner that may follow."""
    params = job.params
    if params.backend not in ("onnxruntime", "auto") or params.device == "cuda":
        return None
    if params.texture_scale != 1 or params.work_size is not None:  # the resizes are torch's (runners.py)
        return None
    if params.device == "auto" and not surely_no_cuda():
        return None
    parallel, threads, batch = cpu_layout(params)
    exports = []
    for spec in job.models:
        if spec.gatys is not None or spec.adain is not None or spec.direction:
            return None
        try:
            family = json.loads((Path(spec.path) / "model.json").read_text(encoding="utf-8")).get("family", "johnson")
        except (OSError, ValueError, AttributeError):
            return None  # the torch path says what is wrong with it
        if family != "johnson":  # translators' tiles need TranslateModels: they keep the torch path
            return None
        sha = weights_sha256(spec.path, hashed)
        if params.backend == "auto":
            chosen = backends.Chooser("auto", [sha, str(threads), str(parallel), str(batch)]).chosen
            if chosen != "onnxruntime":
                return None
        path = backends.onnx_path(sha)
        if not path.is_file():
            return None
        exports.append(path)
    return LeanModels(job, exports, parallel, threads, batch)


class LeanModels:
    """runners.StyleModels' interface for exported networks on onnxruntime, in numpy."""

    def __init__(self, job: Job, exports: list[Path], parallel: int, threads: int, batch_size: int):
        self.job, self.specs = job, list(job.models)
        self.parallel, self.threads, self.batch_size = parallel, threads, batch_size
        self.sessions = [backends.onnx_session(path, threads) for path in exports]
        self.tiled = None  # runners.StyleModels, made (with PyTorch) for the first image that needs tiles
        self.lock = threading.Lock()

    def describe(self, parallel: int = 1) -> str:
        return f"cpu ({parallel} passes x {self.threads} threads, {', '.join(['onnxruntime'] * len(self.sessions))})"

    def needs_tiles(self, height: int, width: int) -> bool:
        return max(height, width) > self.job.params.tile_above

    @property
    def tile_passes(self) -> int:  # a large image's tiles run on all passes (StyleModels.tile_pool)
        return self.parallel

    def stylize(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N,H,W,3) uint8 images of one size -> for each model, its (N,H,W,3) uint8 results."""
        x = to_float(batch)
        h, w = x.shape[-2:]
        padded = x if min(h, w) >= MIN_SIDE else np.pad(
            x, ((0, 0), (0, 0), (0, max(0, MIN_SIDE - h)), (0, max(0, MIN_SIDE - w))), mode="edge")
        results = []
        for session, spec in zip(self.sessions, self.specs):
            y = session.run(None, {"image": padded})[0][..., :h, :w]
            results.append(to_uint8(finish(y, x, spec)))
        return results

    def stylize_large(self, pixels: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            if self.tiled is None:
                import torch

                from tasks.bulk.runners import StyleModels, configure_parallelism

                configure_parallelism(torch.device("cpu"), self.parallel, self.threads)
                p = self.job.params
                self.tiled = StyleModels(self.specs, torch.device("cpu"), tile_size=p.tile_size,
                                         tile_overlap=p.tile_overlap, tile_above=p.tile_above,
                                         batch_size=self.batch_size, parallel=self.parallel)
        return self.tiled.stylize_large(pixels)


def luma(x: np.ndarray) -> np.ndarray:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return (np.float32(LUMA[0]) * r + np.float32(LUMA[1]) * g + np.float32(LUMA[2]) * b)[:, None]


def finish(styled: np.ndarray, photo: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """runners.finish in numpy: colour preservation, then strength; (N,3,H,W) float32 in [0,1]."""
    if spec.preserve_colors:
        styled = np.clip(photo + (luma(styled) - luma(photo)), 0, 1)
    if spec.strength < 1:
        styled = photo + np.float32(spec.strength) * (styled - photo)
    return styled


# The layout changes below go one channel at a time: numpy's strided copy of a whole (N,H,W,3) <->
# (N,3,H,W) transpose took 1.3 ms on a 512-px image here, three channel copies 0.5 ms.


def to_float(batch: np.ndarray) -> np.ndarray:
    """(N,H,W,3) uint8 -> (N,3,H,W) float32 in [0,1], as runners.StyleModels._to_device divides."""
    x = np.empty((batch.shape[0], 3, *batch.shape[1:3]), np.float32)
    for c in range(3):
        np.divide(batch[..., c], np.float32(255), out=x[:, c])
    return x


def to_uint8(y: np.ndarray) -> np.ndarray:
    """(N,3,H,W) float -> (N,H,W,3) uint8, rounded as runners.StyleModels._to_uint8 rounds."""
    z = y * np.float32(255)
    z += np.float32(0.5)
    np.clip(z, 0, 255, out=z)
    out = np.empty((z.shape[0], *z.shape[2:], 3), np.uint8)
    for c in range(3):
        out[..., c] = z[:, c]  # truncates, as astype(uint8) does
    return out
