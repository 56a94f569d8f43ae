"""The engine's CPU layout, chosen by measurement: forward passes at once x threads per pass x images
per batch.

A CPU job with `layout: auto` (`stylepipe stylize` and `translate` by default) that sets none of
parallel_batches, threads and batch_size starts on the fixed layout and settles its layout on its
first untiled batch of trained image networks (runners.StyleModels, TranslateModels,
lean.LeanModels), run alone (tiled images before it still run on every pass: tasks/bulk/engine.py
_may_submit): the layout remembered for this machine, its cores, the backend, texture scale, networks
(a model trained again keeps its layout) and the image's size class (its area to the nearest power
of two) in $XDG_CACHE_HOME/stylepipe/layouts.json; or, with nothing remembered and at least
min_inputs() inputs to do, the fastest of candidates() timed on that image (another than the fixed layout only when it
is SWITCH_MARGIN faster, twice), which is then remembered. A measurement that fails leaves the fixed
layout with a warning, remembered once the same batch has worked on it (a bad input is not the
layout's fault).
`layout: fixed` (the pipeline's infer stage: its outputs are DVC-tracked, and a float summed by
another number of threads may round to another level) keeps lean.cpu_passes' formula: one pass per
core, at most MAX_AUTO_PARALLEL, the cores left over as threads, batches of one.

Each layout is measured as the engine runs it: `passes` threads at once, each stylizing batches of
copies of the image, after a warm-up round (sessions, caches, auto's backend choice). Torch-free:
the runners do the work.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stylepipe.config import StylizeParams
from stylepipe.devices import cpu_count, surely_no_cuda
from tasks.bulk import backends
from tasks.bulk.lean import CPU_BATCH, MAX_AUTO_PARALLEL
from tasks.bulk.plan import Job, weights_sha256

log = logging.getLogger("stylepipe.stylize")

TIMED_ROUNDS = 2  # batches per pass timed for each layout, after one warm-up batch each
# Another layout replaces the fixed one only when it is this much faster, twice: timed five times
# in a row on a 2-core machine, the fixed layout moved by 20% (10.7-12.9 images/s) and the others by
# up to 45%, and the first measurement of a job is low (caches, allocations: the fixed layout,
# measured first, came out lowest), so the fixed layout is timed again last and keeps its better
# figure, and a winner other than it is timed once more against it before it is kept.
SWITCH_MARGIN = 1.10
# A job measures only with at least this many inputs to do per image the measurement stylizes
# (27 on 2 cores for images up to 1 Mpx, 117 on 16): at 4, it costs about a quarter of the job's
# time at the fixed layout's speed (more where the candidates are slower).
INPUTS_PER_MEASURED_IMAGE = 4
BATCH_TWO_MAX_PIXELS = 1024 * 1024  # larger first images are not timed in batches of two (memory)


@dataclass(frozen=True)
class Layout:
    passes: int
    threads: int
    batch: int

    def __str__(self) -> str:
        return f"{self.passes}x{self.threads}x{self.batch}"


class Adjustable(Protocol):
    """What a runner offers for calibration: its forward pass, and a way to change its layout."""

    def stylize(self, batch: np.ndarray) -> list[np.ndarray]: ...

    def set_layout(self, passes: int, threads: int, batch: int) -> None: ...


def candidates(cores: int, pixels: int = 0) -> list[Layout]:
    """The fixed layout first (auto's backend choice is made under it), then half the passes with
    twice the threads, and so on down to one pass on every core; then, for images of at most
    BATCH_TWO_MAX_PIXELS, the fixed passes with batches of two."""
    passes = min(cores, MAX_AUTO_PARALLEL)
    layouts = []
    while passes >= 1:
        layouts.append(Layout(passes, max(1, cores // passes), CPU_BATCH))
        passes //= 2
    first = layouts[0]
    return layouts + ([Layout(first.passes, first.threads, 2 * CPU_BATCH)] if pixels <= BATCH_TWO_MAX_PIXELS else [])


def measured_images(layouts: list[Layout]) -> int:
    """Images a calibration stylizes: a warm-up and TIMED_ROUNDS batches per pass of every layout,
    the first (fixed) one twice."""
    return (1 + TIMED_ROUNDS) * (sum(c.passes * c.batch for c in layouts) + layouts[0].passes * layouts[0].batch)


def min_inputs(cores: int | None = None) -> int:
    return INPUTS_PER_MEASURED_IMAGE * measured_images(candidates(cores or cpu_count()))


def applies(params: StylizeParams) -> bool:
    """Whether this job settles its layout (if its runner can change layout: see `calibrates`): on
    the CPU, known without importing torch (`auto` on a machine with a GPU driver keeps its layout).
    Not with the JPEG codec on the device (its batches hold no pixels to time) or torch.compile
    (the first pass of every layout would time the compiling)."""
    on_cpu = params.device == "cpu" or (params.device == "auto" and surely_no_cuda())
    return (params.layout == "auto" and on_cpu and params.parallel_batches is None and params.threads is None
            and params.batch_size is None and params.codec != "device" and not params.compile)


def calibrates(models: object) -> bool:
    """Trained image networks on the CPU: the runners with set_layout (not Gatys, AdaIN or generators)."""
    return hasattr(models, "set_layout") and getattr(models, "on_cpu", False)


def job_key(job: Job, hashed: dict[str, str] | None = None) -> str | None:
    """The remembered layouts' key but for the image size: machine, cores, backend, texture scale and
    every model's network (backends.network_fingerprint: not its weights) and direction; None for a
    job of paintings (Gatys, AdaIN), whose runners have no layout to choose."""
    if any(spec.gatys is not None or spec.adain is not None for spec in job.models):
        return None
    p = job.params
    # (with auto's candidates: a layout measured when auto could not run openvino is measured again)
    parts = [backends.cpu_name(), cpu_count(), p.backend, "+".join(backends.EXACT_ONNX_RUNTIMES), p.texture_scale,
             p.work_size]
    parts += [(backends.network_fingerprint(spec.path, weights_sha256(spec.path, hashed)), spec.direction or "")
              for spec in job.models]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def size_key(key: str, height: int, width: int) -> str:
    """A job key and an image's size class: its area to the nearest power of two."""
    return f"{key}-{round(math.log2(max(1, height * width)))}"


def _path():
    return backends.cache_dir() / "layouts.json"


def _known() -> dict:
    try:
        known = json.loads(_path().read_text())
        return known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        return {}


def remembered(key: str) -> Layout | None:
    try:
        return Layout(*_known()[key]["layout"])
    except (KeyError, TypeError, ValueError):
        return None


def any_remembered(key: str) -> bool:
    """Whether some image size of this job key has a layout remembered."""
    return any(k.startswith(f"{key}-") for k in _known())


def remember(key: str, layout: Layout, timings: dict[Layout, float], failed: str = "") -> None:
    """Written whole under a temporary name, then renamed. A cache that cannot be written costs the
    next job a measurement, not this job its batch: a warning."""
    path = _path()
    known = _known()
    known[key] = {"layout": [layout.passes, layout.threads, layout.batch], "cpu": backends.cpu_name(),
                  "images_per_s": {str(k): round(v, 3) for k, v in timings.items()}}
    if failed:
        known[key]["failed"] = failed
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # (no such file, or its folder cannot be made either)
            tmp.unlink()
        log.warning("could not remember the layout in %s: %s", path, e)


def measure(models: Adjustable, image: np.ndarray, layout: Layout, rounds: int = TIMED_ROUNDS) -> float:
    """Images per second of `layout`: `passes` threads at once, each stylizing `rounds` batches of
    `batch` copies of image (after one warm-up batch each)."""
    models.set_layout(layout.passes, layout.threads, layout.batch)
    batch = np.repeat(image[None], layout.batch, axis=0)

    def one_pass(n: int) -> None:
        for _ in range(n):
            models.stylize(batch)

    with ThreadPoolExecutor(layout.passes, thread_name_prefix="layout") as pool:
        list(pool.map(one_pass, [1] * layout.passes))
        start = time.perf_counter()
        list(pool.map(one_pass, [rounds] * layout.passes))
        seconds = time.perf_counter() - start
    return layout.passes * layout.batch * rounds / seconds


def calibrate(models: Adjustable, image: np.ndarray, cores: int | None = None) -> tuple[Layout, dict[Layout, float]]:
    """Time every candidate on image (H,W,3) uint8, leave `models` on the fastest (the fixed layout,
    the first candidate, unless another beats it by SWITCH_MARGIN twice); (it, the first timings).
    If a forward pass fails, `models` go back to the fixed layout, and the error is raised."""
    options = candidates(cores or cpu_count(), image.shape[0] * image.shape[1])
    fixed = best = options[0]
    try:
        timings = {layout: measure(models, image, layout) for layout in options}
        if len(options) > 1:
            timings[fixed] = max(timings[fixed], measure(models, image, fixed))
        fastest = max(timings, key=timings.get)
        if timings[fastest] > SWITCH_MARGIN * timings[fixed]:  # confirmed, or noise
            again = {layout: measure(models, image, layout) for layout in (fastest, fixed)}
            if again[fastest] > SWITCH_MARGIN * again[fixed]:
                best = fastest
    except BaseException:
        with contextlib.suppress(Exception):  # (the error that stopped the measurement is the one to see)
            models.set_layout(fixed.passes, fixed.threads, fixed.batch)
        raise
    models.set_layout(best.passes, best.threads, best.batch)
    log.info("layout: %s passes x threads x batch (%s images/s on a %dx%d image; %s)", best, f"{timings[best]:.2f}",
             image.shape[1], image.shape[0], ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    return best, timings
