"""Image networks on onnxruntime or OpenVINO without importing PyTorch: a small job's start-up.

`import torch` costs 1-1.5 s on a quiet 2-core machine and 6-8 s on a busy one, more than
stylizing one 512-px image. A job whose every model is an exported johnson network (or every one a
translation network, pix2pix or cyclegan, in its direction) on the CPU, on backend `onnxruntime`,
`openvino` or `openvino-bf16` (or `auto` that remembers choosing one), with its ONNX export already cached (the first job
makes it, with PyTorch), runs here instead of runners.StyleModels (TranslateModels): the same graph runner,
the same padding, colour preservation, strength and rounding, in numpy. An image large
enough to need tiles runs on the network's two tile graphs (OnnxTiles); only the first such image
of a model brings in PyTorch, to export them. A job with a texture scale
(StylizeParams.texture_scale, work_size) takes the torch path.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models import registry
from models.sidecar import directions as listed_directions, read_sidecar
from stylepipe.config import StylizeParams
from stylepipe.devices import cpu_count, surely_no_cuda
from stylepipe.errors import StageError
from tasks.bulk import backends
from tasks.bulk.plan import Job, ModelSpec, weights_sha256
from tasks.bulk.tiling import statistics_image, stylize_tiled, tile_count
from tasks.data.images import MIN_SIDE

log = logging.getLogger("stylepipe.stylize")

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


def lean_models(job: Job, hashed: dict[str, str] | None = None, inputs: int | None = None) -> LeanModels | None:
    """The torch-free runner for this job, or None when it needs PyTorch (see the module doc).
    hashed: the weights' sha256 by model folder, filled in here for the runner that may follow.
    inputs: the images the job has to do, if known: auto's remembered runtime for a job that small
    (backends.Chooser.for_inputs)."""
    params = job.params
    if params.backend not in (*backends.ONNX_RUNTIMES, "auto") or params.device == "cuda":
        return None
    if params.texture_scale != 1 or params.work_size is not None:  # the resizes are torch's (runners.py)
        return None
    if params.codec == "device" or params.compile:  # torchvision's JPEG codec, torch.compile: runners.py
        return None
    if params.device == "auto" and not surely_no_cuda():
        return None
    parallel, threads, batch = cpu_layout(params)
    exports, hashes, directions, runtimes = [], [], [], []
    for spec in job.models:
        if spec.gatys is not None or spec.adain is not None:
            return None
        try:
            sidecar = read_sidecar(spec.path)
            family = sidecar.get("family", "johnson")
            translator = registry.info(family).translates
            has_directions = listed_directions(sidecar) if translator else []
        except (StageError, KeyError):
            return None  # the torch path says what is wrong with it
        if family != "johnson" and not translator:
            return None
        if spec.direction and not translator:
            return None  # (the torch path's error)
        direction = (spec.direction or "a2b") if translator else ""
        if translator and direction not in has_directions:
            return None  # (the torch path's error)
        sha = weights_sha256(spec.path, hashed)
        runtime = params.backend
        if runtime == "auto":
            chooser = backends.Chooser("auto", backends.choice_key(backends.network_fingerprint(spec.path, sha),
                                                                   threads, parallel, batch, direction))
            runtime = chooser.chosen if inputs is None else chooser.for_inputs(inputs, parallel, batch)
            if runtime not in backends.EXACT_ONNX_RUNTIMES:
                return None
        path = backends.onnx_path(sha, direction)
        if not path.is_file():  # (an export is only ever made of a direction the model has)
            return None
        exports.append(path)
        hashes.append(sha)
        directions.append(direction)
        runtimes.append(runtime)
    if len({bool(d) for d in directions}) > 1:  # translators beside style networks: the torch path's error
        return None
    try:
        return LeanModels(job, exports, hashes, directions, runtimes, parallel, threads, batch)
    except Exception as e:  # a runtime that cannot load the graph: auto goes on through the torch path
        if params.backend == "auto":
            log.warning("%s could not load the networks, auto goes on without it: %s: %s", ", ".join(runtimes),
                        type(e).__name__, e)
            return None
        raise StageError(f"backend {params.backend}: {type(e).__name__}: {e}") from None


class LeanModels:
    """runners.StyleModels' interface for exported networks on onnxruntime or OpenVINO, in numpy."""

    def __init__(self, job: Job, exports: list[Path], hashes: list[str], directions: list[str], runtimes: list[str],
                 parallel: int, threads: int, batch_size: int):
        """hashes: the weights' sha256 per model (the tile graphs' names); directions: a translation
        model's ("" for a style network); runtimes: each model's, of backends.ONNX_RUNTIMES (its tiles
        run on onnxruntime either way)."""
        self.job, self.specs, self.exports, self.hashes = job, list(job.models), exports, hashes
        self.directions, self.runtimes = directions, runtimes
        self.parallel, self.threads, self.batch_size = parallel, threads, batch_size
        self.sessions = [self._session(runtime, path) for runtime, path in zip(runtimes, exports)]
        # made for the first image that needs tiles (a StyleModels or TranslateModels when the tile
        # graphs failed)
        self.tiles: list[OnnxTiles] | object | None = None
        self.tile_pool: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()

    def describe(self, parallel: int = 1) -> str:
        """runners.StyleModels.describe's words (TranslateModels' for translators)."""
        runtimes = f"cpu ({parallel} passes x {self.threads} threads, {', '.join(self.runtimes)})"
        return f"{runtimes}, translating {', '.join(self.directions)}" if any(self.directions) else runtimes

    def needs_tiles(self, height: int, width: int) -> bool:
        return max(height, width) > self.job.params.tile_above

    @property
    def tile_passes(self) -> int:  # a large image's tiles run on all passes, as StyleModels' do
        return self.parallel

    on_cpu = True

    def set_layout(self, passes: int, threads: int, batch: int) -> None:
        """runners.StyleModels.set_layout: graph runners of `threads` threads, tiles on `passes` passes."""
        with self.lock:
            changed = (passes, threads) != (self.parallel, self.threads)
            remake = [backends.remade_for_layout(runtime, (self.parallel, self.threads), (passes, threads))
                      for runtime in self.runtimes]
            self.parallel, self.threads, self.batch_size = passes, threads, batch
            self.sessions = [self._session(runtime, path) if again else session for runtime, path, session, again
                             in zip(self.runtimes, self.exports, self.sessions, remake)]
            if self.tiles is not None and not isinstance(self.tiles, list):
                self.tiles.set_layout(passes, threads, batch)  # the torch fallback's own
            elif changed:
                self.tiles, self.tile_pool = None, None  # made again for the next large image

    def _session(self, runtime: str, path: Path):
        return backends.graph_runner(runtime, path, self.threads, self.parallel)

    def stylize(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N,H,W,3) uint8 images of one size -> for each model, its (N,H,W,3) uint8 results."""
        x = to_float(batch)
        h, w = x.shape[-2:]
        results = []
        for session, spec in zip(self.sessions, self.specs):
            y = session.run(None, {"image": pad_to_min_side(x)})[0][..., :h, :w]
            results.append(to_uint8(finish(y, x, spec)))
        return results

    def stylize_large(self, pixels: np.ndarray) -> list[np.ndarray]:
        """One (H,W,3) uint8 image above tile_above -> for each model, its (H,W,3) uint8 result.
        Tile graphs that cannot be exported or loaded send the tiles to PyTorch (runners.StyleModels or
        TranslateModels), with a warning."""
        with self.lock:
            if self.tiles is None:
                try:
                    self.tiles = [OnnxTiles(*backends.ensure_tile_graphs(Path(spec.path), sha, direction), self.threads,
                                            self.threads * self.parallel)
                                  for spec, sha, direction in zip(self.specs, self.hashes, self.directions)]
                except Exception as e:  # (a full or read-only cache, an exporter's error)
                    log.warning("tiles on torch, the ONNX tile graphs failed: %s: %s", type(e).__name__, e)
                    self.tiles = self._torch_tiles()
                if self.parallel > 1 and isinstance(self.tiles, list):
                    self.tile_pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="tiles")
            tiles, pool = self.tiles, self.tile_pool
        if not isinstance(tiles, list):
            return tiles.stylize_large(pixels)
        p = self.job.params
        small = statistics_image(pixels, p.tile_above)
        count = tile_count(*pixels.shape[:2], p.tile_size, p.tile_overlap)
        return [stylize_tiled(pixels, t.runner(t.record(small), spec, count), tile=p.tile_size,
                              overlap=p.tile_overlap, batch_size=self.batch_size, map_batches=pool.map if pool else map)
                for t, spec in zip(tiles, self.specs)]

    def _torch_tiles(self):
        import torch

        from tasks.bulk.runners import StyleModels, TranslateModels, configure_parallelism

        configure_parallelism(torch.device("cpu"), self.parallel, self.threads)
        p = self.job.params
        runner = TranslateModels if any(self.directions) else StyleModels
        return runner(self.specs, torch.device("cpu"), tile_size=p.tile_size, tile_overlap=p.tile_overlap,
                      tile_above=p.tile_above, batch_size=self.batch_size, parallel=self.parallel)


class OnnxTiles:
    """One network's tiles on onnxruntime (models/export.py export_tile_graphs): every instance
    norm's statistics recorded once per image (on tiling.statistics_image: a thumbnail or a mosaic
    of crops), then each tile run with them, as models/shared_stats.py does in PyTorch. Torch-free;
    the tile runs may be called from several threads at once (onnxruntime sessions are thread-safe).

    An image of at least CONSTANTS_FROM_TILES tiles runs them on a session of its own, made with its
    statistics written into the tile graph as constants. onnxruntime then folds each norm's scale and
    shift into the convolution before it and fuses the ReLU after it, which it cannot do with graph
    inputs: a 1056x1200 tile took about 14% less time. A new session costs 20-30 ms and its first runs
    are slower, so an image of few tiles keeps the graph with inputs (docs/speed.md, session 20: 2400-px
    images of 4 tiles about 5% slower with their own session, 4096 px of 16 tiles 4% faster, 8000 px
    of 56 tiles 14-20% faster)."""

    CONSTANTS_FROM_TILES = 16

    def __init__(self, statistics: Path, tiles: Path, threads: int, statistics_threads: int):
        """statistics_threads: the statistics pass runs on the threads of every tile pass. Raises when
        onnxruntime cannot load the graphs (the callers then tile on PyTorch)."""
        self.threads = threads
        self.tiles = backends.SessionPerThread(tiles, threads)  # the graph as exported: statistics as inputs
        needs_statistics = len(self.tiles.get_inputs()) > 1  # a network without instance norms has none
        self.statistics = backends.onnx_session(statistics, statistics_threads) if needs_statistics else None
        self.graph = None
        if needs_statistics:
            import onnx

            self.graph = onnx.load(str(tiles))

    def record(self, small: np.ndarray) -> dict[str, np.ndarray]:
        """The (H,W,3) uint8 statistics image -> the tile graph's statistics inputs, by name."""
        if self.statistics is None:
            return {}
        outputs = self.statistics.run(None, {"image": pad_to_min_side(to_float(small[None]))})
        return dict(zip((o.name for o in self.statistics.get_outputs()), outputs))

    def with_statistics(self, statistics: dict[str, np.ndarray]) -> backends.SessionPerThread:
        """The tile graph with `statistics` as constants instead of inputs."""
        from onnx import ModelProto, numpy_helper

        model = ModelProto()
        model.CopyFrom(self.graph)
        graph = model.graph
        graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in statistics.items())
        inputs = [i for i in graph.input if i.name not in statistics]
        del graph.input[:]
        graph.input.extend(inputs)
        for node in graph.node:  # onnxruntime folds an Add into a Conv when the constant is its second input
            if node.op_type == "Add" and node.input[0] in statistics:
                node.input[0], node.input[1] = node.input[1], node.input[0]
        return backends.SessionPerThread(model.SerializeToString(), self.threads)

    def runner(self, statistics: dict[str, np.ndarray], spec: ModelSpec,
               tiles: int) -> Callable[[np.ndarray], np.ndarray]:
        """tiling.stylize_tiled's `run` for an image of `tiles` tiles: (N,th,tw,3) uint8 tiles ->
        (N,th,tw,3) float in [0,1], finished."""
        session, feed = self.tiles, statistics
        if statistics and tiles >= self.CONSTANTS_FROM_TILES:
            try:
                session, feed = self.with_statistics(statistics), {}
            except Exception as e:  # onnxruntime refusing the rewritten graph: the exported one runs
                log.warning("tile statistics as inputs, the graph with them as constants failed: %s: %s",
                            type(e).__name__, e)

        def run(tiles: np.ndarray) -> np.ndarray:
            x = to_float(tiles)
            h, w = x.shape[-2:]
            y = session.run(None, {"image": pad_to_min_side(x), **feed})[0][..., :h, :w]
            return finish(y, x, spec).transpose(0, 2, 3, 1)
        return run


def pad_to_min_side(x: np.ndarray) -> np.ndarray:
    """runners.PadToMinSide's padding: (N,3,H,W) with a side below MIN_SIDE, its edge replicated."""
    h, w = x.shape[-2:]
    if min(h, w) >= MIN_SIDE:
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, max(0, MIN_SIDE - h)), (0, max(0, MIN_SIDE - w))), mode="edge")


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
