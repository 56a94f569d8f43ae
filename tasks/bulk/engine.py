"""Bulk stylization: a source of images -> N style models -> an output folder, exactly once.

    reader thread --(bounded queue)--> decode workers --> size buckets --> models on the device
        --> encode workers (temp file + rename) --> ledger rows (after the rename)

With StylizeParams.tar_size, the encode workers return the files' bytes instead, and the engine
packs them into tar files (tasks/bulk/tar_output.py): a tar's ledger rows, then the tar.

With the JPEG codec on the device (StylizeParams.codec; CUDA by default), a decode worker hands a
JPEG the device can take back undecoded, the runner decodes it, and returns JPEG files to write:
only compressed bytes cross the workers' pipes. One that fails on the device alone is decoded by
the workers after all, which say what is wrong with it, as for any other input.

`execute()` runs this pipeline over the work items of a plan (tasks/bulk/plan.py) and records
every outcome; `stylize()` is plan + execute + summary in this process. The Prefect flow
(flows/bulk.py) plans in its driver and runs `execute()` once per shard.

Memory stays flat for any archive size: at most `prefetch` decoded images wait for the model and
at most `encode_limit` results wait for the encoders; the reader blocks when they are full.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import queue
import shutil
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import stylepipe
from stylepipe.devices import cpu_count
from stylepipe.errors import StageError
from tasks.bulk import codec, layout, remote
from tasks.bulk.ledger import Ledger, Row, options_json
from tasks.bulk.memory import keep_freed_memory
from tasks.bulk.plan import (Job, Plan, RunStats, Summary, WorkItem, combine, input_byte_cap, local_area,
                             open_job_source, options_hash, plan, record_refused, summarize, windows)
from tasks.bulk.sources import RESERVED_NAME, Seed, SingleFileSource, Source
from tasks.bulk.tar_output import TarOutput
from tasks.bulk.workers import WORKER_DIED, submit, wait_any, worker_pool
from tasks.data.reasons import is_fatal, reason

log = logging.getLogger("stylepipe.stylize")

# No forward pass has worked yet and this many inputs failed alone: the model, not the inputs.
MODEL_BROKEN_AFTER = 4
LEDGER_FLUSH_S = 1.0
LEDGER_FLUSH_ROWS = 256


# --- temporary files ----------------------------------------------------------------------------


class TempArea:
    """<out>/.stylepipe/tmp/<writer>/: where one writer's outputs are born. Held under an flock, so
    a sweep never removes the files of a live writer; whatever a killed writer left is removed by
    the next run (sweep_temp) or by the next writer of the same name."""

    def __init__(self, out: Path, writer: str):
        self.root = Path(out) / RESERVED_NAME / "tmp"
        self.dir = self.root / writer
        self.lock_path = self.root / f"{writer}.lock"

    def __enter__(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = open(self.lock_path, "a+")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock.close()
            raise StageError(f"another stylize process is writing to {self.dir.parent.parent.parent} "
                             f"as {self.dir.name!r}") from None
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()
        return self.dir

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)
        self.lock.close()
        remove_empty_internal(self.root.parent.parent)


def sweep_temp(out: Path) -> int:
    """Remove the temp folders of writers that are gone (their lock is free); returns how many."""
    root = Path(out) / RESERVED_NAME / "tmp"
    if not root.is_dir():
        return 0
    swept = 0
    for child in sorted(root.iterdir()):
        if child.suffix == ".lock" or not child.is_dir():
            continue
        lock_path = root / f"{child.name}.lock"
        with open(lock_path, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer
            shutil.rmtree(child, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            swept += 1
    for stray in root.glob("*.lock"):
        if not (root / stray.stem).exists():
            stray.unlink(missing_ok=True)
    remove_empty_internal(out)
    return swept


def remove_empty_internal(out: Path) -> None:
    """Drop <out>/.stylepipe/tmp and <out>/.stylepipe when nothing is left in them."""
    for folder in (Path(out) / RESERVED_NAME / "tmp", Path(out) / RESERVED_NAME):
        try:
            folder.rmdir()
        except OSError:
            break


# --- the reader ---------------------------------------------------------------------------------


class Reader:
    """Reads payloads in a thread (archive members are read and decompressed here, folder files by
    the workers), handing them over through a bounded queue."""

    DONE = object()

    def __init__(self, source: Source, items: list[WorkItem], depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.exhausted = False
        by_relpath = {item.entry.relpath: n for n, item in enumerate(items)}
        self._pairs = ((by_relpath[e.relpath], payload) for e, payload in source.read(i.entry for i in items))
        self.thread = threading.Thread(target=self._run, name="stylize-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for pair in self._pairs:
                if not self._put(pair):
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            self._put(e)
            return
        self._put(self.DONE)

    def _put(self, value) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(value, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def take(self, timeout: float) -> tuple[int, object] | None:
        """The next (item index, payload), or None if none arrived in time / the reader is done."""
        if self.exhausted:
            return None
        try:
            value = self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
        except queue.Empty:
            return None
        if value is self.DONE:
            self.exhausted = True
            return None
        if isinstance(value, BaseException):
            self.exhausted = True
            raise StageError(f"reading the source failed: {type(value).__name__}: {value}")
        return value

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


# --- execution ----------------------------------------------------------------------------------


@dataclass
class InFlight:
    item: WorkItem
    decoded: codec.Decoded | None = None
    shape: tuple[int, int] = (0, 0)     # of the outputs
    model_seconds: float = 0.0
    device: str = ""  # what ran it (the runner's describe, taken in the model thread after its batch)
    outputs_left: int = 0


@dataclass
class Batch:
    keys: list[int]
    # kept until the pass worked: a failed batch is retried image by image. Undecoded JPEGs
    # (codec.Decoded.jpeg) for the device: a list of their bytes.
    pixels: np.ndarray | list[bytes]
    tiled: bool
    shape: tuple[int, int] = (0, 0)  # of undecoded JPEGs


class BusyMeter:
    """Pass-seconds of forward work, counting at most `passes` at a time: a batch occupies one pass,
    a large image's tiles all of them (StyleModels.tile_pool), and two large images at once share
    the passes instead of counting twice."""

    def __init__(self, passes: int, since: float | None = None):
        """since: when the run started (perf_counter), if before now: its capacity counts from then."""
        self.passes, self.level, self.seconds = passes, 0, 0.0
        self.capacity = 0.0  # pass-seconds there were: wall time x passes, as the passes changed
        self.since = time.perf_counter() if since is None else since
        self.lock = threading.Lock()

    def _advance(self) -> None:
        now = time.perf_counter()
        self.seconds += min(self.level, self.passes) * (now - self.since)
        self.capacity += self.passes * (now - self.since)
        self.since = now

    def set_passes(self, passes: int) -> None:
        """The layout settled on another number of passes (tasks/bulk/layout.py)."""
        with self.lock:
            self._advance()
            self.passes = passes

    def sums(self) -> tuple[float, float]:
        """(busy pass-seconds, pass-seconds there were) until now."""
        with self.lock:
            self._advance()
            return self.seconds, self.capacity

    def start(self, weight: int) -> None:
        with self.lock:
            self._advance()
            self.level += weight

    def stop(self, weight: int) -> None:
        with self.lock:
            self._advance()
            self.level -= weight


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{stylepipe.__version__}+{rev or 'unknown'}"


class Pipeline:
    def __init__(self, job_plan: Plan, items: list[WorkItem], ledger: Ledger, writer: str,
                 progress=None, run_id: str | None = None):
        from tasks.bulk.lean import lean_models

        self.plan, self.job, self.params = job_plan, job_plan.job, job_plan.job.params
        self.items, self.ledger, self.writer, self.progress = items, ledger, writer, progress
        hashed: dict[str, str] = {}  # the weights' sha256: taken once, by whichever runner asks first
        # The CPU layout (tasks/bulk/layout.py) starts fixed and may settle on the first batch
        self.layout_key = layout.job_key(self.job, hashed) if layout.applies(self.params) else None
        # exported networks on onnxruntime or OpenVINO: no PyTorch import at all
        lean = lean_models(self.job, hashed, inputs=len(items))
        if lean is not None:
            self.models, self.parallel, self.batch_size = lean, lean.parallel, lean.batch_size
        else:
            self._build_torch_models(hashed)
        self.labels = [spec.name for spec in self.job.models]
        self.options = [options_json(o) for o in job_plan.options]
        self.option_hashes = [options_hash(o) for o in job_plan.options]
        self.remote_out = remote.is_remote(job_plan.job.out)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.code_version = code_version()
        self.stats = RunStats(device=self.models.describe(self.parallel))
        self.device_jpeg_side = getattr(self.models, "device_jpeg_side", 0)
        self.measure_layout = self.layout_key is not None and len(items) >= layout.min_inputs()
        self.layout_failed: tuple | None = None  # (key, the fixed layout, why) of a failed measurement
        self.layout_pending = (self.layout_key is not None and layout.calibrates(self.models)
                               and (self.measure_layout or layout.any_remembered(self.layout_key)))
        self._set_limits()
        self.rows: list[Row] = []
        self.last_flush = time.monotonic()
        self.forward_works = False
        self.unproven_failures: list[tuple[int, str]] = []  # (key, reason) held until a pass works

    def _set_limits(self) -> None:
        workers, batch = self.params.workers, self.batch_size
        # decoded images waiting for the model, at most: a batch for every pass plus two in reserve
        self.prefetch = max((self.parallel + 2) * batch, 2 * workers + batch)
        self.encode_limit = 2 * workers + self.parallel * batch * len(self.labels)

    def _build_torch_models(self, hashed: dict[str, str]) -> None:
        from stylepipe.devices import pick_device
        from tasks.bulk.runners import build_models, configure_parallelism, default_batch_size

        device = pick_device(self.params.device)
        self.parallel = configure_parallelism(device, self.params.parallel_batches, self.params.threads)
        self.batch_size = self.params.batch_size or default_batch_size(device)
        self.models = build_models(list(self.job.models), device, tile_size=self.params.tile_size,
                                   tile_overlap=self.params.tile_overlap, tile_above=self.params.tile_above,
                                   batch_size=self.batch_size, backend=self.params.backend, parallel=self.parallel,
                                   texture_scale=self.params.texture_scale, work_size=self.params.work_size,
                                   hashed=hashed, codec=self.params.codec, compile=self.params.compile)

    def run(self, source: Source) -> RunStats:
        start = time.perf_counter()
        self.inflight: dict[int, InFlight] = {}
        self.buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        self.large: list[int] = []    # decoded images above tile_above, stylized one at a time
        self.decoding: dict[Future, int] = {}
        self.inferring: dict[Future, Batch] = {}
        self.encoding: dict[Future, list[tuple[int, int]]] = {}  # -> the (key, model) of each output
        self.encoding_outputs = 0
        self.tar: TarOutput | None = None
        self.tar_rows: list[Row] = []  # of the outputs in self.tar: committed when it is finished
        # One image has nothing to overlap: decode processes (a forkserver, workers importing the
        # codec, the pixels pickled both ways) would cost a one-image job more than its image
        # does (an 8000x8000 JPEG: 3-5 s of 40).
        workers = 0 if isinstance(source, SingleFileSource) or len(self.items) <= 1 else self.params.workers
        keep_freed_memory()  # before the model threads start: no page faults on large activations
        with (TempArea(local_area(self.job.out), self.writer) as tmp_dir, worker_pool(workers) as pool,
              ThreadPoolExecutor(self.parallel, thread_name_prefix="stylize-model") as models):
            self.tmp_dir, self.pool, self.model_pool = str(tmp_dir), pool, models
            self.workers = workers
            if self.params.tar_size:
                self.tar = TarOutput(str(self.job.out), self.tmp_dir, self.writer, self.run_id,
                                     self.params.tar_size, self.remote_out)
            self.busy = BusyMeter(self.parallel, since=start)
            reader = Reader(source, self.items, depth=self.prefetch)
            try:
                self._loop(reader)
                self._settle_unproven()  # too few inputs to tell a broken model: they failed
                self._finish_tar()
            finally:
                reader.close()
                for f in [*self.decoding, *self.inferring, *self.encoding]:
                    f.cancel()
                if self.tar is not None:
                    self.tar.abandon()  # a run that stopped: its unfinished tar's outputs are redone
                self._flush(force=True)
        self.stats.seconds = time.perf_counter() - start
        self.stats.network_seconds, self.stats.pass_seconds = self.busy.sums()
        self.stats.device = self.models.describe(self.parallel)  # with the backends chosen on the way
        return self.stats

    def _loop(self, reader: Reader) -> None:
        while True:
            self._feed(reader)
            while self._may_submit():
                batch = self._next_batch(final=reader.exhausted and not self.decoding)
                if not batch:
                    break
                self._submit(batch)
            busy = [*self.decoding, *self.inferring, *self.encoding]
            if not (busy or self.buffered or not reader.exhausted):
                return
            if busy:
                done = wait_any(busy, self.pool, timeout=0.05 if not reader.exhausted else None)
                self._collect(done)
            elif not reader.exhausted:
                self._feed(reader, block=True)
            self._flush()

    def _may_submit(self) -> bool:
        """Room for another batch. Until the layout is settled (on the first batch that is not
        tiled: _settle_layout), that batch runs alone (it is timed alone, and nothing runs on the
        runner while its layout changes); large images (tiled batches, which _next_batch takes first)
        still run `parallel` at once before it."""
        if len(self.inferring) >= self.parallel:
            return False
        if not self.layout_pending:
            return True
        if any(not batch.tiled for batch in self.inferring.values()):
            return False
        return bool(self.large) or not self.inferring

    @property
    def buffered(self) -> int:
        return len(self.large) + sum(len(keys) for keys in self.buckets.values())

    def _feed(self, reader: Reader, block: bool = False) -> None:
        while len(self.decoding) + self.buffered < self.prefetch:
            got = reader.take(timeout=0.2 if block else 0)
            if got is None:
                return
            block = False
            key, payload = got
            self.inflight[key] = InFlight(self.items[key])
            job = codec.DecodeJob(key, payload, self.params.max_size, self.params.max_pixels,
                                  input_byte_cap(self.params), self.device_jpeg_side)
            if isinstance(payload, Seed):  # nothing to decode: a worker round trip would cost more
                done: Future = Future()
                done.set_result(codec.decode_job(job))
                self.decoding[done] = key
            else:
                self.decoding[self._to_workers(codec.decode_job, job)] = key

    def _next_batch(self, final: bool) -> list[int]:
        """Keys of one batch of equal-sized images: a full bucket, else the fullest one when waiting
        longer would not fill it (nothing left to decode) or would hold too many images. A large
        image makes a batch of its own, in tiles."""
        if self.large:
            return [self.large.pop(0)]
        full = next((shape for shape, keys in self.buckets.items() if len(keys) >= self.batch_size), None)
        if full is None and self.buckets and (final or not self.decoding or self.buffered >= self.prefetch):
            full = max(self.buckets, key=lambda shape: len(self.buckets[shape]))
        if full is None:
            return []
        keys = self.buckets[full][: self.batch_size]
        del self.buckets[full][: self.batch_size]
        if not self.buckets[full]:
            del self.buckets[full]
        return keys

    def _collect(self, done) -> None:
        for future in done:
            if future in self.decoding:
                self._decoded(self.decoding.pop(future), future)
            elif future in self.inferring:
                self._stylized(self.inferring.pop(future), future)
            elif future in self.encoding:  # (_wait_for_encoders may have taken it already)
                self._encoded(self.encoding.pop(future), future)

    def _decoded(self, key: int, future: Future) -> None:
        result = _result(future, key)
        if isinstance(result, codec.Failed):
            self._fail_input(key, result.reason)
            return
        self.inflight[key].decoded = result
        if result.jpeg is not None:  # (never tiled: codec.passthrough_jpeg keeps to device_jpeg_side)
            self.buckets[(result.height, result.width, "jpeg")].append(key)
        elif self.models.needs_tiles(*result.pixels.shape[:2]):
            self.large.append(key)
        else:
            self.buckets[result.pixels.shape[:2]].append(key)

    def _to_workers(self, fn, job) -> Future:
        return submit(self.pool, fn, job)

    def _submit(self, keys: list[int]) -> None:
        decoded = [self.inflight[k].decoded for k in keys]
        if decoded[0].jpeg is not None:
            jpegs = [d.jpeg for d in decoded]
            for d in decoded:
                d.jpeg = None  # the batch holds them now
            self._submit_pixels(keys, jpegs, False, (decoded[0].height, decoded[0].width))
            return
        tiled = self.models.needs_tiles(*decoded[0].pixels.shape[:2])
        if tiled:
            pixels = decoded[0].pixels
        elif len(decoded) == 1 and decoded[0].pixels.flags.writeable:
            pixels = decoded[0].pixels[None]  # a batch of one: no copy
        else:
            pixels = np.stack([d.pixels for d in decoded])  # (writable: torch warns about a read-only array)
        for d in decoded:
            d.pixels = None  # the batch holds them now
        self._submit_pixels(keys, pixels, tiled)

    def _submit_pixels(self, keys: list[int], pixels: np.ndarray | list[bytes], tiled: bool,
                       shape: tuple[int, int] = (0, 0)) -> None:
        paintings = [self.inflight[k].item.painting for k in keys]  # AdaIN with a manifest: per input
        future = self.model_pool.submit(self._forward, pixels, tiled, paintings if any(paintings) else None, shape)
        self.inferring[future] = Batch(keys, pixels, tiled, shape)

    def _forward(self, pixels: np.ndarray | list[bytes], tiled: bool, paintings: list[str] | None,
                 shape: tuple[int, int]) -> tuple[list[np.ndarray | list[bytes]], float, str]:
        """In a model thread: per model, the (N,H,W,3) results (or, for undecoded JPEGs into JPEG
        outputs, the N files' bytes); the seconds it took; what ran it (the ledger's device)."""
        jpegs = isinstance(pixels, list)
        settling = self.layout_pending and not tiled and paintings is None and not jpegs
        if settling:
            self._settle_layout(pixels[0])
        started = time.perf_counter()
        passes = self.models.tile_passes if tiled else 1
        self.busy.start(passes)
        try:
            if jpegs:
                quality = self.params.quality if self.params.format == "jpg" else None
                results = self.models.stylize_jpegs(pixels, shape, quality)
            elif paintings is not None:
                results = self.models.stylize(pixels, paintings=paintings)
            elif tiled:
                results = [r[None] for r in self.models.stylize_large(pixels)]
            else:
                results = self.models.stylize(pixels)
        finally:
            self.busy.stop(passes)
            try:  # (after a failure too: it reads this thread's record once)
                device = self.models.describe(self.parallel)
            except Exception:  # (a lost GPU: the error to see is the batch's)
                device = ""
        if settling and self.layout_failed:
            layout.remember(*self.layout_failed[:2], {}, failed=self.layout_failed[2])
        return results, time.perf_counter() - started, device

    def _settle_layout(self, image: np.ndarray) -> None:
        """On the first batch that is not tiled (the only batch in flight until this returns): the
        layout remembered for its image's size, else the fastest measured on it (a job with enough
        inputs), else the fixed one. A failed measurement leaves the fixed layout with a warning; it
        is remembered (not tried again) once the same batch has worked on the fixed layout, so that a
        bad input does not count against the layout."""
        key = layout.size_key(self.layout_key, *image.shape[:2])
        options = layout.candidates(cpu_count(), image.shape[0] * image.shape[1])
        chosen = layout.remembered(key)
        if chosen is not None and chosen not in options:  # (another version's, or edited by hand)
            chosen = None
        try:
            if chosen is not None:
                self.models.set_layout(chosen.passes, chosen.threads, chosen.batch)
            elif self.measure_layout:
                chosen, timings = layout.calibrate(self.models, image)
                layout.remember(key, chosen, timings)
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
            log.warning("layout: %s; the fixed layout stays", why)
            fixed = options[0]  # what the engine started on
            with contextlib.suppress(Exception):
                self.models.set_layout(fixed.passes, fixed.threads, fixed.batch)
            if chosen is None:  # a measurement that failed: remembered if the batch then works
                self.layout_failed = (key, fixed, why)
            chosen = None
        if chosen is not None:
            self.parallel, self.batch_size = chosen.passes, chosen.batch
            self.busy.set_passes(chosen.passes)
            self._set_limits()
        self.layout_pending = False  # (last: the main loop then submits batches on every pass)

    def _stylized(self, batch: Batch, future: Future) -> None:
        error = future.exception()
        if error is not None:
            self._forward_failed(batch, error)
            return
        results, seconds, device = future.result()
        keys = batch.keys
        self._forward_worked()
        jobs: list[codec.EncodeJob] = []
        for n, key in enumerate(keys):
            state = self.inflight[key]
            state.model_seconds, state.device = seconds / len(keys), device
            state.shape = batch.shape if isinstance(results[0], list) else results[0].shape[1:3]
            state.outputs_left = len(state.item.outputs)
            for model, target in state.item.outputs:
                e = state.item.entry
                ident = remote.identity(e.relpath, e.stamp, state.item.model_hash or self.plan.model_hashes[model],
                                        self.option_hashes[model]) if self.remote_out and not self.tar else ""
                result = results[model][n]
                encoded = result if isinstance(result, bytes) else None
                jobs.append(codec.EncodeJob(key, model, None if encoded is not None else result, str(self.job.out),
                                            target, self.tmp_dir, self.params.format, self.params.quality, ident,
                                            encoded, to_tar=self.tar is not None))
        # one round trip per worker and batch, not per output
        per_future = -(-len(jobs) // max(1, self.workers))
        for start in range(0, len(jobs), per_future):
            chunk = jobs[start:start + per_future]
            self._wait_for_encoders(len(chunk))
            self.encoding[self._to_workers(codec.encode_jobs, chunk)] = [(j.key, j.model) for j in chunk]
            self.encoding_outputs += len(chunk)

    def _wait_for_encoders(self, more: int) -> None:
        while self.encoding and self.encoding_outputs + more > self.encode_limit:
            done = wait_any(self.encoding, self.pool)
            for future in done:
                self._encoded(self.encoding.pop(future), future)

    def _encoded(self, outputs: list[tuple[int, int]], future: Future) -> None:
        self.encoding_outputs -= len(outputs)
        results = _result(future, *outputs[0])
        if isinstance(results, codec.Failed):  # the worker raised: each output of the round trip failed
            results = [codec.Failed(key, results.reason, model) for key, model in outputs]
        for (key, model), result in zip(outputs, results):
            self._one_encoded(key, model, _unless_fatal(result))

    def _one_encoded(self, key: int, model: int, result: codec.Written | codec.Failed) -> None:
        state = self.inflight[key]
        if isinstance(result, codec.Failed):
            self._record_failure(state, model, result.reason)
        else:
            d = state.decoded
            target = dict(state.item.outputs)[model]
            h, w = state.shape
            row = self._row(state, model, "done", output=target, output_bytes=result.bytes, width=w, height=h,
                            input_sha256=d.sha256, seconds=d.seconds + state.model_seconds + result.seconds)
            self.stats.outputs += 1
            if self.tar is None:
                self.rows.append(row)
            else:
                self._pack(row, result.data)
        state.outputs_left -= 1
        if state.outputs_left == 0:
            self._finish(key)

    def _pack(self, row: Row, data: bytes) -> None:
        """Add an output to the tar; its row waits for the tar to be finished."""
        self.tar_rows.append(row)
        try:
            row.output = self.tar.add(row.output, data)
        except (OSError, ValueError) as e:
            self.tar.abandon()
            self._tar_failed(e)
            return
        if self.tar.full:
            self._finish_tar()

    def _finish_tar(self) -> None:
        """Commit the rows of the tar's outputs, then move the tar into place (tar_output.py)."""
        if self.tar is None or self.tar.empty:
            return
        self.rows.extend(self.tar_rows)
        self._flush(force=True)
        try:
            self.tar.finish()
        except Exception as e:  # noqa: BLE001 - an object store's client raises its own errors
            if not (self.remote_out or isinstance(e, (OSError, ValueError))):
                raise
            self._tar_failed(e)
            return
        self.tar_rows = []

    def _tar_failed(self, error: Exception) -> None:
        """The outputs of a tar that could not be written or moved into place fail, as write-error
        whatever the cause (the next run redoes them; their rows may already say done); a full disk
        then stops the run."""
        rows, self.tar_rows = self.tar_rows, []
        why = reason("write-error", f"{type(error).__name__}: {error}")
        for row in rows:
            row.status, row.reason, row.output, row.output_bytes = "failed", why, "", 0
            row.finished_at = time.time()
        self.rows.extend(rows)
        self._flush(force=True)
        self.stats.outputs -= len(rows)
        self.stats.failed += len(rows)
        self.stats.failures.extend((row.relpath, why) for row in rows[:max(0, 20 - len(self.stats.failures))])
        _unless_fatal(codec.Failed(0, codec.write_failure(error)))  # (a full disk: raises)

    def _forward_failed(self, batch: Batch, error: BaseException) -> None:
        """A batch that fails is split and its images tried alone; an image that fails alone is
        that input's fault (`model-error`), unless no forward pass of the run has worked yet and
        several inputs in a row failed: then the model is broken, and the run stops."""
        if not forward_error_is_inputs_fault(error):
            raise StageError(f"the model failed: {one_line(error)}") from error
        if len(batch.keys) > 1:
            for n, key in enumerate(batch.keys):
                self._submit_pixels([key], batch.pixels[n:n + 1], batch.tiled, batch.shape)
            return
        if isinstance(batch.pixels, list):  # an undecoded JPEG: the workers decode it after all
            key = batch.keys[0]
            job = codec.DecodeJob(key, batch.pixels[0], self.params.max_size, self.params.max_pixels,
                                  input_byte_cap(self.params))
            self.decoding[self._to_workers(codec.decode_job, job)] = key
            return
        failure = (batch.keys[0], reason("model-error", one_line(error)))
        if self.forward_works:
            self._fail_input(*failure)
            return
        self.unproven_failures.append(failure)
        if len(self.unproven_failures) >= MODEL_BROKEN_AFTER:
            raise StageError(f"the model failed on each of the first {MODEL_BROKEN_AFTER} inputs, none worked: "
                             f"{one_line(error)}")

    def _forward_worked(self) -> None:
        if not self.forward_works:
            self.forward_works = True
            self._settle_unproven()

    def _settle_unproven(self) -> None:
        for failure in self.unproven_failures:
            self._fail_input(*failure)
        self.unproven_failures.clear()

    def _fail_input(self, key: int, why: str) -> None:
        state = self.inflight[key]
        for model, _ in state.item.outputs:
            self._record_failure(state, model, why)
        self._finish(key)

    def _record_failure(self, state: InFlight, model: int, reason: str) -> None:
        sha = state.decoded.sha256 if state.decoded else ""
        self.rows.append(self._row(state, model, "failed", reason=reason, input_sha256=sha))
        self.stats.failed += 1
        if len(self.stats.failures) < 20:
            self.stats.failures.append((state.item.entry.relpath, reason))

    def _row(self, state: InFlight, model: int, status: str, **values) -> Row:
        e = state.item.entry
        return Row(e.relpath, self.labels[model], status, source=self.job.source, input_size=e.size,
                   input_stamp=e.stamp, model_hash=state.item.model_hash or self.plan.model_hashes[model],
                   options_hash=self.option_hashes[model], options=self.options[model],
                   code_version=self.code_version, device=state.device or self.models.describe(self.parallel),
                   finished_at=time.time(), run_id=self.run_id, **values)

    def _finish(self, key: int) -> None:
        del self.inflight[key]
        self.stats.processed += 1
        if self.progress is not None:
            self.progress.update(1)

    def _flush(self, force: bool = False) -> None:
        due = len(self.rows) >= LEDGER_FLUSH_ROWS or time.monotonic() - self.last_flush >= LEDGER_FLUSH_S
        if self.rows and (force or due):
            self.ledger.write(self.rows)
            self.rows = []
            self.last_flush = time.monotonic()


def _result(future: Future, key: int, model: int | None = None):
    """A worker's answer. An exception in a worker fails that one input (and is retried by the next
    run); a worker process that died takes the pool with it, so the run stops, unrecorded items
    to be redone by the next run. A failure that is no input's fault (a full disk) stops the run."""
    try:
        result = future.result()
    except BrokenProcessPool:
        raise StageError(WORKER_DIED) from None
    except Exception as e:  # noqa: BLE001
        return codec.Failed(key, reason("worker-error", one_line(e)), model)
    return _unless_fatal(result)


def _unless_fatal(result):
    if isinstance(result, codec.Failed) and is_fatal(result.reason):
        raise StageError(f"{result.reason}; outputs so far are recorded, free space and run again to resume")
    return result


def forward_error_is_inputs_fault(error: BaseException) -> bool:
    """A forward pass that raises on one input (a size the network cannot take, ...) is that input's
    fault; a lost device, host memory running out or our own refusal (StageError) is not."""
    if isinstance(error, (StageError, MemoryError)) or not isinstance(error, Exception):
        return False
    text = str(error)
    return not (type(error).__name__ == "AcceleratorError" or "CUDA error" in text or "device-side" in text)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def execute(job_plan: Plan, items: list[WorkItem] | None = None, *, ledger_path: Path | None = None,
            writer: str = "main", progress=None, run_id: str | None = None) -> RunStats:
    """Stylize `items` (default: all of the plan's), recording outcomes in `ledger_path` (default:
    the job's main ledger; a shard passes its own segment)."""
    items = job_plan.items if items is None else items
    if not items:
        return RunStats()
    with Ledger(ledger_path or job_plan.job.ledger) as ledger:
        pipeline = Pipeline(job_plan, items, ledger, writer, progress, run_id)
        return pipeline.run(open_job_source(job_plan.job))


def stylize(job: Job, *, resume: bool = True, limit: int | None = None, progress: bool = True) -> Summary:
    """Plan, record the refused files, run the pipeline in this process, summarize; window by
    window for a large sampling job (plan.windows)."""
    from tqdm import tqdm

    sweep_temp(local_area(job.out))
    bar = tqdm(total=0, unit="img", desc="stylize", disable=not progress, smoothing=0.05, dynamic_ncols=True)
    parts, planned = [], 0
    with bar:
        for part in windows(job):
            p = plan(part, resume=resume, limit=None if limit is None else max(0, limit - planned))
            planned += len(p.items)
            record_refused(p)
            log.info("%s: %d files, %d to stylize with %s (%d already done, %d left for later)", part.source,
                     p.inputs, len(p.items), ", ".join(s.name for s in job.models), p.finished["done"], p.limited)
            bar.total += len(p.items)
            bar.refresh()
            parts.append(summarize(p, execute(p, progress=bar)))
    return combine(parts)
