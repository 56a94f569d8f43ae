"""Which runtime runs an image network's forward pass on the CPU: PyTorch, or onnxruntime or
OpenVINO on the network exported to ONNX (models/export.py). `auto` decides by timing the three on
the job's first batch (never by guesswork) and remembers the answer per machine, network
(network_fingerprint: a model trained again keeps it) and thread layout in
~/.cache/stylepipe/backends.json (under $XDG_CACHE_HOME if set).

The three agree within 1/255 on every pixel (tests/tasks/bulk/test_backends.py), so the backend is not
part of an output's ledger identity; it is recorded in each row's lineage (the `device` column).
`torch-bf16` (bf16 autocast + channels_last) and `openvino-bf16` (OpenVINO at bf16 inference
precision), for CPUs with AVX512-BF16 or AMX, are lossy: asked for by name only, never by auto, and
part of the outputs' identity (tasks/bulk/plan.py output_options).
CUDA keeps PyTorch (fp16 autocast, channels_last). Tiled images (above tile_above) run on the
backend their model runs on (torch-bf16's in fp32 PyTorch; openvino's and openvino-bf16's on onnxruntime): on onnxruntime through two more graphs
(models/export.py export_tile_graphs: one records the instance norms' statistics on a thumbnail or
a mosaic, one runs the tiles with them; tasks/bulk/lean.py OnnxTiles), on PyTorch when those cannot
be made. Only families models/export.py can export (johnson; pix2pix and cyclegan, one export per
direction) have the ONNX backends; others run on PyTorch.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from models.sidecar import WEIGHTS_FILE, read_sidecar
from stylepipe.config import BACKENDS
from stylepipe.errors import StageError

if TYPE_CHECKING:  # torch-free at import: tasks/bulk/lean.py runs ONNX jobs without PyTorch
    import torch
    from torch import Tensor

log = logging.getLogger("stylepipe.stylize")

# The runtimes of a network's ONNX export. auto times torch and the exact ones (EXACT_ONNX_RUNTIMES);
# openvino-bf16 is lossy, asked for by name only, as torch-bf16 is.
ONNX_RUNTIMES = ("onnxruntime", "openvino", "openvino-bf16")
EXACT_ONNX_RUNTIMES = ("onnxruntime", "openvino")
OPENVINO_PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}  # OpenVINO's inference precision per runtime
EXPORTABLE_FAMILIES = ("johnson", "pix2pix", "cyclegan")
CALIBRATION_RUNS = 3  # timed runs of each backend (after one warm-up each), interleaved
# A backend whose warm-up and first timed run both took this many times the fastest's best of the two
# is not timed again: it cannot win (torch took 1.65-2.5x the faster ONNX runtime's time in session
# 36's calibrations). Two runs, so that one slow spell does not drop a backend, whose loss would be
# remembered.
CALIBRATION_DROP = 1.5
# A job whose first input is tiled calibrates on a crop of its statistics image at most this side (a
# whole 2048-px one would take seconds per run)
CALIBRATION_SIDE = 512


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylepipe"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Part of a cached export's name: raised when models/export.py writes a different graph for the same
# weights (2: the phase-split output conv), so that exports made by older code are made again.
EXPORT_REVISION = 2


def onnx_path(weights_sha256: str, direction: str = "") -> Path:
    """Where a network's ONNX export is cached: by its weights' sha256 (and a translation model's
    direction: one export per direction) and the export code's revision."""
    name = f"{weights_sha256[:32]}-r{EXPORT_REVISION}{f'-{direction}' if direction else ''}"
    return cache_dir() / "onnx" / f"{name}.onnx"


def remove_older_exports(weights_sha256: str, direction: str = "") -> list[Path]:
    """Delete the cached exports of the same weights (and direction) made by older export revisions,
    their tile graphs and revision 1's unnumbered name included: onnx_path never names them again.
    A newer revision's (another checkout's, sharing the cache) is left alone. Returns what went."""
    same = re.compile(rf"{re.escape(weights_sha256[:32])}(?:-r(\d+))?{re.escape(f'-{direction}' if direction else '')}"
                      r"(?:-norm-statistics|-tiles)?\.onnx")
    removed = []
    for path in onnx_path(weights_sha256, direction).parent.glob(f"{weights_sha256[:32]}*.onnx"):
        match = same.fullmatch(path.name)
        if match and int(match.group(1) or 1) < EXPORT_REVISION:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:  # a tidy-up: a file that will not go costs the job nothing
                log.warning("could not delete an older ONNX export %s: %s", path, e)
                continue
            removed.append(path)
    return removed


def tile_graph_paths(weights_sha256: str, direction: str = "") -> tuple[Path, Path]:
    """Where a network's two tile graphs are cached (norm statistics, tiles): beside its export."""
    path = onnx_path(weights_sha256, direction)
    return path.with_name(f"{path.stem}-norm-statistics.onnx"), path.with_name(f"{path.stem}-tiles.onnx")


def ensure_tile_graphs(model_dir: Path, weights_sha256: str, direction: str = "") -> tuple[Path, Path]:
    """The tile graphs' paths, exported first (with PyTorch) unless cached: both of them, or the tile
    graph alone for a network without instance norms (its only input is the image)."""
    statistics, tiles = tile_graph_paths(weights_sha256, direction)
    if not tiles.is_file() or (not statistics.is_file() and _input_count(tiles) > 1):
        from models.export import export_tile_graphs

        export_tile_graphs(model_dir, statistics, tiles, direction=direction)
    return statistics, tiles


def _input_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.input)


def onnx_session(model: Path | bytes, threads: int):
    """A CPU session of `threads` intra-op threads for a model file, or a serialized model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


class SessionPerThread:
    """An ONNX network's sessions of `threads` intra-op threads each, for passes that run at once:
    one shared by every calling thread when `threads` is 1 (a Run then computes on its caller
    alone), else one per calling thread (the constructing thread's too, whether or not it runs). A session's intra-op pool is shared by concurrent Run calls, so P passes of T threads on
    one session would compute on about P + T - 1 threads, not P x T. (Reasoned from onnxruntime's
    design, not measured: the development machine has 2 cores, where passes x threads > 1 x 1 is
    2 x 1 or 1 x 2.)"""

    def __init__(self, path: Path | bytes, threads: int):
        """path: the model's file, or the serialized model."""
        self.path, self.threads = path, threads
        self.first = onnx_session(path, threads)  # (the inputs' and outputs' names; the first caller's)
        self.local = threading.local()
        self.local.session = self.first

    def session(self):
        if self.threads == 1:
            return self.first
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = onnx_session(self.path, self.threads)
        return session

    def run(self, names, feed):
        return self.session().run(names, feed)

    def get_inputs(self):
        return self.first.get_inputs()

    def get_outputs(self):
        return self.first.get_outputs()


_WARNED: set[Path] = set()  # graphs whose openvino-bf16 precision was warned about (set_layout compiles again)
# A process's first OpenVINO run runs alone. OpenVINO's Python binding (2026.4) fills a function-local
# C++ static on the first use of a tensor's `data` and runs Python code meanwhile, which lets another
# thread take the GIL: when that thread reaches the same static it waits for its guard while
# holding the GIL, and the first never gets the GIL back. Both model threads then wait for good
# (a job hung so, session 33; tests/tasks/bulk/test_backends.py provokes it).
_FIRST_RUN = threading.Lock()
_first_run_done = False  # set once a run succeeded: a first run that raised leaves the next one alone too


class OpenVinoGraph:
    """An ONNX graph compiled by OpenVINO's CPU plugin, with SessionPerThread's `run`: one compiled
    model of `passes` streams of `threads` threads each, and one infer request per calling thread
    (concurrent requests run on separate streams; a Python caller waits without the GIL).

    Inference precision is pinned (`precision`): f32 for `openvino`, an exact backend like
    onnxruntime, although on a CPU with AMX or AVX512-BF16 OpenVINO's default is bf16, which is lossy
    (up to 2 levels of 255 on the fast network); bf16 for `openvino-bf16`, asked for by name. Other
    AVX-512 CPUs emulate bf16 (lossy, and slower than f32) and CPUs without AVX-512 run f32: either
    is said in a warning, once per graph. Shapes stay dynamic: a bulk job's images come in
    many sizes, and a compile per size costs about 0.2 s. CPU pinning is off: the engine's decode
    and encode workers share the cores with the passes."""

    def __init__(self, path: Path, threads: int, passes: int = 1, precision: str = "f32"):
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": passes, "INFERENCE_NUM_THREADS": passes * threads,
            "ENABLE_CPU_PINNING": False})
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # (f32, bf16)
        if precision == "bf16" and path not in _WARNED:
            native = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if self.precision != "bf16":
                log.warning("openvino-bf16: this CPU runs %s in %s", path.name, self.precision)
            elif not native:
                log.warning("openvino-bf16: this CPU has no AVX512-BF16 or AMX: OpenVINO emulates bf16, lossy and "
                            "slower than openvino")
            _WARNED.add(path)
        self.outputs = list(self.compiled.outputs)
        self.local = threading.local()

    def run(self, names, feed):
        """names: None (every output; SessionPerThread.run's signature). Returns the outputs' arrays,
        copies the next run cannot overwrite."""
        global _first_run_done
        if not _first_run_done:
            with _FIRST_RUN:
                if not _first_run_done:
                    outputs = self._infer(feed)
                    _first_run_done = True
                    return outputs
        return self._infer(feed)

    def _infer(self, feed):
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.compiled.create_infer_request()
        result = request.infer(feed)
        return [result[output] for output in self.outputs]


def graph_runner(runtime: str, path: Path, threads: int, passes: int):
    """An exported graph's runner on one of ONNX_RUNTIMES, for `passes` passes of `threads` threads."""
    if runtime in OPENVINO_PRECISION:
        return OpenVinoGraph(path, threads, passes, OPENVINO_PRECISION[runtime])
    if runtime == "onnxruntime":
        return SessionPerThread(path, threads)
    raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(ONNX_RUNTIMES)}")


def remade_for_layout(runtime: str, old: tuple[int, int], new: tuple[int, int]) -> bool:
    """Whether a graph runner made for the layout `old` (passes, threads per pass) must be made again
    for `new`: onnxruntime's sessions depend on the threads, OpenVINO's compiled model on both (its
    streams are the passes)."""
    (old_passes, old_threads), (passes, threads) = old, new
    return threads != old_threads or (runtime in OPENVINO_PRECISION and passes != old_passes)


class OnnxNet:
    """A network exported to ONNX and run by onnxruntime or OpenVINO (`runtime`): called like the
    torch module, on CPU float tensors (N,3,H,W) in [0,1]. The export is made once (it needs
    PyTorch), then cached."""

    def __init__(self, model_dir: Path, weights_sha256: str, threads: int, direction: str = "",
                 runtime: str = "onnxruntime", passes: int = 1):
        from models.export import export_onnx

        path = onnx_path(weights_sha256, direction)
        if not path.is_file():
            export_onnx(model_dir, path, direction=direction)  # written under a temporary name, then renamed
            remove_older_exports(weights_sha256, direction)
        start = time.perf_counter()
        self.session = graph_runner(runtime, path, threads, passes)
        # what a job pays before its first image on this runtime (its import, if first, and session
        # or compile): Chooser.for_inputs weighs it for small jobs
        self.start_seconds = time.perf_counter() - start

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.from_numpy(self.session.run(None, {"image": x.contiguous().numpy()})[0])


# A trained model's sidecar keys that record its training run, not its network (tasks/train.py):
# left out of network_fingerprint. code_version is the training code's: the network a job runs is
# built by the checkout that runs it.
RUN_RECORD_KEYS = ("style", "model", "dataset", "train_data_sha256", "style_image_sha256", "final_losses",
                   "seconds", "device", "processes", "code_version")
HEADER_CAP = 16 << 20  # bytes of a safetensors header read for its tensors' names and shapes


def network_fingerprint(model_dir: str | Path, weights_sha256: str) -> str:
    """What auto's remembered choice is keyed by, of a model: what its speed depends on. That is the
    network, not its weights' values: the tensors' names, dtypes and shapes (the safetensors header,
    read without the weights) and the sidecar without the record of its training run
    (RUN_RECORD_KEYS). So a model trained again with the same params (the nightly's, on new data) or
    on another painting keeps the choice instead of timing the runtimes again. The weights' sha256
    where either file cannot be read so (the torch path then says what is wrong with them)."""
    try:
        with open(Path(model_dir) / WEIGHTS_FILE, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= HEADER_CAP:
                return weights_sha256
            header = json.loads(f.read(size))
        tensors = sorted((name, t["dtype"], list(t["shape"])) for name, t in header.items() if name != "__metadata__")
        network = {k: v for k, v in read_sidecar(model_dir).items() if k not in RUN_RECORD_KEYS}
        text = json.dumps([tensors, network], sort_keys=True)
    except (StageError, OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):  # (JSON nested too deep)
        return weights_sha256
    return "network-" + hashlib.sha256(text.encode()).hexdigest()


def choice_key(fingerprint: str, threads: int, passes: int, batch: int, direction: str = "") -> list[str]:
    """The parts of a remembered choice's key besides the machine: the network (network_fingerprint)
    and the engine's layout."""
    key = [fingerprint, str(threads), str(passes), str(batch)]
    return key + [direction] if direction else key


def _seconds(run, x: Tensor) -> float:
    start = time.perf_counter()
    run(x)
    return time.perf_counter() - start


def _median_seconds(runs: dict[str, object], x: Tensor, warm_up: dict[str, float]) -> dict[str, float]:
    """Each run's median time on x, the runs taking turns (a slow spell of the machine then falls on
    every backend, not on the one timed during it). warm_up: each one's untimed first run; one whose
    warm-up and first timed run were both CALIBRATION_DROP times slower than the fastest keeps
    its one timed run."""
    times = {name: [_seconds(run, x)] for name, run in runs.items()}
    best = {name: min(warm_up.get(name, t[0]), t[0]) for name, t in times.items()}
    slow = {name for name, b in best.items() if b > CALIBRATION_DROP * min(best.values())}
    for _ in range(CALIBRATION_RUNS - 1):
        for name, run in runs.items():
            if name not in slow:
                times[name].append(_seconds(run, x))
    return {name: statistics.median(t) for name, t in times.items()}


class Chooser:
    """Per model: the backend asked for, or for `auto` the one that was faster on the first batch."""

    def __init__(self, requested: str, key_parts: list[str]):
        self.requested = requested
        self.key = self._key(key_parts)
        self.lock = threading.Lock()
        self.chosen: str | None = None if requested == "auto" else requested
        self.timings: dict[str, float] = {}
        self.starts: dict[str, float] = {}  # seconds to start each runtime (OnnxNet.start_seconds; torch: 0)
        self.remembered = self._remembered() if self.chosen is None else {}  # (backends.json's entry, read once)
        if self.chosen is None:
            remembered = self.remembered.get("backend")
            self.chosen = remembered if remembered in ("torch", *EXACT_ONNX_RUNTIMES) else None  # (a hand-edited file)

    @staticmethod
    def _key(key_parts: list[str]) -> str:
        # with the export's revision and auto's candidates: a choice made against an older graph, or
        # among fewer runtimes, is made again
        return hashlib.sha256(json.dumps([cpu_name(), f"export-r{EXPORT_REVISION}", "+".join(EXACT_ONNX_RUNTIMES),
                                          *key_parts]).encode()).hexdigest()[:24]

    def _remembered(self) -> dict:
        try:
            entry = json.loads((cache_dir() / "backends.json").read_text()).get(self.key, {})
            return entry if isinstance(entry, dict) else {}
        except (OSError, ValueError, AttributeError):
            return {}

    def for_inputs(self, inputs: int, passes: int, batch: int = 1) -> str | None:
        """The remembered choice for a job of `inputs` images on `passes` passes of `batch`-image
        batches (the calibration timed one batch). Where it is one of
        EXACT_ONNX_RUNTIMES: the one of them with the least start plus run time over those images, as the
        calibration measured both. A one-image job thus keeps onnxruntime where OpenVINO's faster runs
        would not repay its import and compile (docs/speed.md, session 32)."""
        if self.chosen not in EXACT_ONNX_RUNTIMES:
            return self.chosen
        runs, starts = self.remembered.get("ms"), self.remembered.get("start_ms")
        if not isinstance(runs, dict) or not isinstance(starts, dict):
            return self.chosen
        rounds = -(-inputs // max(1, passes * batch))  # batches per pass
        costs = {}
        for name in EXACT_ONNX_RUNTIMES:
            try:
                costs[name] = float(starts[name]) + rounds * float(runs[name])
            except (KeyError, TypeError, ValueError):
                continue
        return min(costs, key=costs.get) if self.chosen in costs else self.chosen

    def _remember(self) -> None:
        path = cache_dir() / "backends.json"
        try:
            known = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            known = {}
        known[self.key] = self.remembered = {
            "backend": self.chosen, "ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
            "start_ms": {k: round(v * 1000, 2) for k, v in self.starts.items()}, "cpu": cpu_name()}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError as e:  # costs the next job a calibration, not this job its batch
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("could not remember the backend in %s: %s", path, e)

    def choose(self, runs: dict[str, object], x: Tensor, wait: bool = True) -> str:
        """The backend for this model; the first call of an `auto` chooser times each on x.
        wait=False: while another pass is timing them, the first exact ONNX runtime among runs
        instead of waiting (auto picks among exact runtimes only, so any of them gives this batch's
        results): the job's other passes go on working through the calibration."""
        if self.chosen is not None:
            return self.chosen
        if not self.lock.acquire(blocking=wait):
            return next((name for name in EXACT_ONNX_RUNTIMES if name in runs), "torch")
        try:
            if self.chosen is None:
                # warm-up: first-call allocations, kernel selection
                warm_up = {name: _seconds(run, x) for name, run in runs.items()}
                self.timings = _median_seconds(runs, x, warm_up)
                for name in self.starts:  # a first run's extra time (OpenVINO's at a new shape) is start-up too
                    self.starts[name] += max(0.0, warm_up.get(name, 0.0) - self.timings.get(name, 0.0))
                self.chosen = min(self.timings, key=self.timings.get)
                log.info("backend: %s (median of up to %d runs on a %s batch: %s)", self.chosen, CALIBRATION_RUNS,
                         "x".join(map(str, x.shape)),
                         ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.timings.items()))
                self._remember()
        finally:
            self.lock.release()
        return self.chosen


def check_backend(requested: str, family: str, device: torch.device) -> str:
    """The backend a model will use on this device: 'torch' where ONNX does not apply."""
    if requested not in BACKENDS:
        raise StageError(f"backend {requested!r}: use one of {', '.join(BACKENDS)}")
    if requested == "torch-bf16" and device.type != "cpu":
        raise StageError("backend torch-bf16 is for the CPU (on CUDA the network runs in fp16 autocast)")
    exportable = family in EXPORTABLE_FAMILIES
    if requested in ONNX_RUNTIMES and (not exportable or device.type != "cpu"):
        why = f"the {family} family has no ONNX export" if not exportable else f"{requested} runs here on the CPU only"
        raise StageError(f"backend {requested}: {why} (use --backend torch or auto)")
    if requested == "auto" and (not exportable or device.type != "cpu"):
        return "torch"
    return requested
