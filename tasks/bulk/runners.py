"""The models of one bulk run on one device, behind one interface: `stylize(batch)` -> per model,
a batch of finished uint8 images. Four kinds: trained image-to-image networks (StyleModels: any
"image" family, e.g. johnson), translation networks (TranslateModels: pix2pix, cyclegan, in a
direction), Gatys optimisation (GatysModels), an AdaIN model after paintings chosen per job
(AdainModels), and generators (SampleModels: any "sample" family, whose inputs are (seed, label)
pairs instead of pixels).

For image networks:

With a texture scale (StylizeParams.texture_scale, work_size) the networks see the image resized to
network_shape() and their results are resized back to the output size, before the finishing; the
resizes are PyTorch's, on the device, outside whatever runs the network (either runtime, tiles).
"Finished" means after the per-model touches: colour preservation (the stylized luminance on the
photo's own colours) and strength (a blend with the photo). On CUDA the networks run in fp16
autocast with channels_last tensors, and only uint8 crosses the bus (a quarter of fp32's bytes);
on the CPU they run in fp32 NCHW (channels_last measured no faster there).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import registry
from models.gan import set_truncation
from models.sidecar import read_sidecar
from models.weights import load_model
from stylepipe.config import DEFAULT_MAX_PIXELS
from stylepipe.errors import StageError
from tasks.bulk import backends
from models.shared_stats import set_recording, with_shared_stats
from tasks.bulk.lean import CPU_BATCH, LUMA, OnnxTiles, cpu_passes
from tasks.bulk.plan import ModelSpec, weights_sha256
from tasks.bulk.tiling import statistics_image, stylize_tiled, tile_count
from tasks.data.images import MIN_SIDE

log = logging.getLogger("stylepipe.stylize")
# torchvision 0.29 deprecates its JPEG codec (stylize_jpegs) for TorchCodec's, and says so on every
# call; it still works, and the GPU machine's torchvision (0.26) has no successor to move to yet.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

DEFAULT_BATCH = {"cpu": CPU_BATCH, "cuda": 16}  # a GPU needs batches to fill up
# Forward passes at once on CUDA (threads on the one default stream): while one waits for its
# results, the other's decode and launches proceed. On an H200, 1,504 JPEGs of 1024 px: with the
# JPEG codec on the GPU 91.9 images/s with one pass, 137.1-139.6 with two, 110.6 / 124.4 with
# three / four; with Pillow's 87.6-92.4 and 85.0-94.8 (benchmarks/bench_gpu.py, docs/speed.md, session 17).
CUDA_PASSES = 2
# Each pass (model thread) queues its work on a CUDA stream of its own. torchvision's nvJPEG decoder
# writes from a private stream into blocks the caching allocator hands out on the caller's stream,
# without waiting for that stream (pytorch/vision#9606): on a stream shared by the passes it could
# overwrite a block that another pass's queued kernels still read; on its own stream a pass decodes
# only once that stream is idle (stylize_jpegs). Its encoder reads the images from its own stream
# and copies each file out on the legacy default stream: the pass's stream waits for both. No
# faster or slower than one shared stream on an H200 (254-258 images/s once outputs flow, either
# way; docs/speed.md, session 19; the wait for the legacy stream came after, from a review, not run on a
# GPU). A switch for benchmarks/bench_gpu.py's comparison.
CUDA_STREAM_PER_PASS = True
# An image enlarged for the network (texture_scale below 1, or work_size above its size) may have at
# most this many pixels (the input cap's default): it is held whole, in float32.
MAX_NETWORK_PIXELS = DEFAULT_MAX_PIXELS
# One forward pass holds at most this many pixels (images x height x width, as the network sees
# them): a larger batch runs in several passes. CUDA kernels index a tensor in 32 bits: on an H200
# the classic network's decoder (64 channels at full resolution) failed at 32 images of 1024 px
# (2^31 elements: "input tensor must fit into 32-bit index math"); at 2^24 pixels the widest
# full-resolution activation of the bundled families (64 channels) holds half the limit. One image
# is never split: above tile_above it is tiled, and its tile batches obey this.
MAX_PASS_PIXELS = 2**24
# StylizeParams.compile: torch.compile's options (static shapes: a new image size compiles again)
COMPILE_OPTIONS: dict = {"dynamic": False}


def default_batch_size(device: torch.device) -> int:
    return DEFAULT_BATCH.get(device.type, 1)


def configure_parallelism(device: torch.device, parallel_batches: int | None, threads: int | None) -> int:
    """How many forward passes run at once (each on its own batch, in its own thread), and torch's
    threads per pass; returns the former. On CPUs the default is one pass per core with one thread
    each: an intra-op thread pool stalls at every op's barrier whenever one of its threads is
    descheduled (by a decode worker, or another job on the machine), while independent passes
    never wait for each other. On CUDA, CUDA_PASSES."""
    if device.type == "cuda":
        parallel = parallel_batches or CUDA_PASSES
        torch.set_num_threads(threads or 2)
    else:
        parallel, per_pass = cpu_passes(parallel_batches, threads)
        torch.set_num_threads(per_pass)
    return parallel


class PadToMinSide(nn.Module):
    """An image network that also takes images with a side below MIN_SIDE (tasks/data/images.py):
    they are padded by replicating their edge, and the result cropped back to their size."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return self.net(self.pad(x))[..., :h, :w]

    @staticmethod
    def pad(x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if min(h, w) >= MIN_SIDE:
            return x
        return F.pad(x, (0, max(0, MIN_SIDE - w), 0, max(0, MIN_SIDE - h)), mode="replicate")


def images_per_pass(height: int, width: int) -> int:
    return max(1, MAX_PASS_PIXELS // (height * width))


def pass_slices(count: int, height: int, width: int) -> list[slice]:
    """A batch of `count` images of height x width in passes of at most MAX_PASS_PIXELS."""
    per_pass = images_per_pass(height, width)
    return [slice(i, i + per_pass) for i in range(0, count, per_pass)]


def network_shape(height: int, width: int, texture_scale: float = 1.0,
                  work_size: int | None = None) -> tuple[int, int]:
    """The size the networks see an image of height x width at: its own unless a texture scale is set."""
    scale = texture_scale * (max(height, width) / work_size if work_size else 1)
    if scale == 1:
        return height, width
    shape = max(1, round(height / scale)), max(1, round(width / scale))
    if shape[0] * shape[1] > MAX_NETWORK_PIXELS:
        raise ValueError(f"the texture scale enlarges it to {shape[1]}x{shape[0]}, more than "
                         f"{MAX_NETWORK_PIXELS} pixels")
    return shape


def resize(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """(N,3,H,W) float in [0,1] -> (N,3,*shape): bicubic, antialiased when shrinking; x at its own size."""
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    return F.interpolate(x, size=tuple(shape), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)


def luma(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def finish(styled: Tensor, photo: Tensor, spec: ModelSpec) -> Tensor:
    """Colour preservation, then strength; both in [0,1] float, (N,3,H,W)."""
    if spec.preserve_colors:
        styled = (photo + (luma(styled) - luma(photo))).clamp(0, 1)
    if spec.strength < 1:
        styled = torch.lerp(photo, styled, spec.strength)
    return styled


def files_to_host(files: list[Tensor]) -> list[bytes]:
    """Encoded files (1-D uint8 tensors, on the device or not) -> their bytes, in one copy to the
    host: one wait for the device, not one per file."""
    if not files:
        return []
    ends = np.cumsum([f.numel() for f in files])
    flat = torch.cat(files).cpu().numpy()
    return [flat[end - f.numel():end].tobytes() for f, end in zip(files, ends)]


class Bf16Net(nn.Module):
    """The `torch-bf16` backend: the network in bf16 autocast with channels_last weights and input,
    on the CPU (AVX512-BF16 / AMX); fp32 out. Lossy (tasks/bulk/backends.py)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(net).to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net(x.contiguous(memory_format=torch.channels_last)).float()


class StyleModels:
    def __init__(self, specs: list[ModelSpec], device: torch.device, *, tile_size: int,
                 tile_overlap: int, tile_above: int, batch_size: int, backend: str = "torch",
                 parallel: int = 1, texture_scale: float = 1.0, work_size: int | None = None,
                 hashed: dict[str, str] | None = None, codec: str = "auto", compile: bool = False):
        """hashed: the weights' sha256 already taken this job, by model folder (tasks/bulk/lean.py's).
        codec: StylizeParams.codec (auto: JPEGs on the device when it is CUDA). compile: the torch
        runtime's networks through torch.compile (untiled batches; tiles stay eager)."""
        self.specs, self.device = specs, device
        self.jpeg_on_device = codec == "device" or (codec == "auto" and device.type == "cuda")
        self.texture = (texture_scale, work_size)
        self.cuda = device.type == "cuda"
        loaded = [load_model(Path(s.path), device) for s in specs]
        self.nets = [PadToMinSide(net) for net, _ in loaded]
        # AdaIN takes the content statistics of the whole picture: tiles would each take their own
        self.never_tile = any(sidecar.get("family") == "adain" for _, sidecar in loaded)
        # per model: the runtimes it may run on (tasks/bulk/backends.py) and who picks among them
        self.runtimes: list[dict[str, object]] = []
        self.choosers: list[backends.Chooser] = []
        self.exports: list[tuple[str, str] | None] = []  # per model: (weights sha256, direction) when exportable
        for spec, net, (_, sidecar) in zip(specs, self.nets, loaded):
            family = sidecar.get("family", "johnson")
            wanted = backends.check_backend(backend, family, device)
            if compile and wanted == "auto":  # compile is torch's: nothing to time, nothing to remember
                wanted = "torch"
            # a translation model's export is one direction's generator
            direction = (spec.direction or "a2b") if registry.info(family).translates else ""
            if wanted in ("torch", "torch-bf16"):
                chooser = backends.Chooser(wanted, [])
                self.exports.append(None)
            else:  # hashed once: the remembered choice's key and the ONNX export's name
                sha = weights_sha256(spec.path, hashed)
                self.exports.append((sha, direction))
                fingerprint = backends.network_fingerprint(spec.path, sha)
                chooser = backends.Chooser(wanted, backends.choice_key(fingerprint, torch.get_num_threads(), parallel,
                                                                       batch_size, direction))
            runtimes: dict[str, object] = {"torch": net} if wanted in ("torch", "auto") else {}
            if compile and "torch" in runtimes:
                runtimes["torch"] = torch.compile(net, **COMPILE_OPTIONS)
            if wanted == "torch-bf16":
                runtimes["torch-bf16"] = Bf16Net(net)
            elif chooser.chosen != "torch":  # an auto job that remembers torch needs no export or session
                # auto: the one it remembers, or the exact ones to time
                for runtime in [chooser.chosen] if chooser.chosen else backends.EXACT_ONNX_RUNTIMES:
                    try:
                        onnx_net = backends.OnnxNet(Path(spec.path), sha, torch.get_num_threads(), direction,
                                                    runtime, parallel)
                        runtimes[runtime] = PadToMinSide(onnx_net)
                        chooser.starts[runtime] = onnx_net.start_seconds
                    except OSError as e:  # the export's cache cannot be written (a read-only home, a full disk)
                        if wanted != "auto":
                            raise StageError(f"backend {runtime}: the network's ONNX export could not be cached: {e}") from None
                        log.warning("auto runs on torch: the network's ONNX export could not be cached: %s", e)
                        runtimes = {"torch": runtimes["torch"]}
                        chooser.chosen = "torch"
                        break
                    except Exception as e:  # a runtime that cannot load the graph (no wheel for this CPU, a plugin error)
                        if wanted != "auto":
                            raise StageError(f"backend {runtime}: {type(e).__name__}: {e}") from None
                        log.warning("auto without %s, which could not load the network: %s: %s", runtime,
                                    type(e).__name__, e)
                        if chooser.chosen == runtime:  # the remembered choice: this job runs on torch
                            chooser.chosen = "torch"
            self.runtimes.append(runtimes)
            self.choosers.append(chooser)
        # (what the ledger's device says: onnxruntime and torch-bf16 models are never compiled)
        self.compiled = compile and any("torch" in runtimes for runtimes in self.runtimes)
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # buckets repeat the same shapes
            self.nets = [n.to(memory_format=torch.channels_last) for n in self.nets]
        self.per_thread = threading.local()  # tiled copies: their norms hold one image's statistics
        self.tile_size, self.tile_overlap, self.tile_above = tile_size, tile_overlap, tile_above
        self.batch_size = batch_size
        # a large image's tile batches run `parallel` at a time on the CPU (one core each by default);
        # one pool for all passes, so two large images at once still use `parallel` threads
        self.tile_pool = ThreadPoolExecutor(parallel, thread_name_prefix="tiles") if parallel > 1 and not self.cuda else None
        self.tile_passes = parallel if self.tile_pool else 1  # the passes a large image occupies
        self.pass_threads = torch.get_num_threads()  # per pass, as configure_parallelism set it
        # made for a model's first large image; False: they failed, its tiles run on torch
        self.onnx_tiles: list[OnnxTiles | bool | None] = [None] * len(specs)
        self.tiles_lock = threading.Lock()

    def describe(self, parallel: int = 1) -> str:
        extras = ("compiled, " if self.compiled else "") + ("JPEG codec on the device, " if self.device_jpeg_side else "")
        # the runtimes this thread's last batch ran on (read once: the engine asks right after it), which
        # differ from the choosers' while another pass is timing them (Chooser.choose's wait=False)
        ran = self.per_thread.__dict__.pop("ran", None)
        if self.cuda:
            return (f"{self.device} ({torch.cuda.get_device_name(self.device)}, fp16 autocast, {extras}"
                    f"{parallel} at once)")
        chosen = ", ".join("+".join(sorted(r)) if ran else c.chosen or "auto: not chosen yet"
                           for c, r in zip(self.choosers, ran or [None] * len(self.choosers)))
        return f"cpu ({parallel} passes x {self.pass_threads} threads, {extras}{chosen})"

    @property
    def on_cpu(self) -> bool:
        return not self.cuda

    def set_layout(self, passes: int, threads: int, batch: int) -> None:
        """The engine's CPU layout changed (tasks/bulk/layout.py): torch's threads per pass (each
        model thread takes them at its next batch), ONNX sessions of that many threads, the passes a
        large image's tiles run on, and the batch size. (auto's backend choice stays remembered
        under the fixed layout, which every job starts on.)"""
        for spec, runtimes, export, chooser in zip(self.specs, self.runtimes, self.exports, self.choosers):
            for runtime in set(runtimes) & set(backends.ONNX_RUNTIMES):
                if chooser.chosen not in (None, runtime):
                    del runtimes[runtime]  # timed by auto and not chosen
                elif backends.remade_for_layout(runtime, (self.tile_passes, self.pass_threads), (passes, threads)):
                    sha, direction = export
                    runtimes[runtime] = PadToMinSide(backends.OnnxNet(Path(spec.path), sha, threads, direction,
                                                                      runtime, passes))
        if threads != self.pass_threads:
            self.pass_threads = threads
            self.onnx_tiles = [t and None for t in self.onnx_tiles]  # (a failure stays one)
        if passes != self.tile_passes:
            self.tile_pool = ThreadPoolExecutor(passes, thread_name_prefix="tiles") if passes > 1 else None
            self.tile_passes = passes
            self.onnx_tiles = [t and None for t in self.onnx_tiles]  # (their statistics run on every pass's threads)
        self.batch_size = batch

    def needs_tiles(self, height: int, width: int) -> bool:
        """Above tile_above, as the image or as the networks see it (a texture scale may enlarge it)."""
        if self.never_tile:
            return False
        try:
            seen = network_shape(height, width, *self.texture)
        except ValueError:
            return True  # too large once enlarged: stylize_large fails this one input, saying why
        return max(height, width, *seen) > self.tile_above

    def _to_device(self, pixels: np.ndarray) -> Tensor:
        """(N,H,W,3) uint8 -> (N,3,H,W) float in [0,1] on the device."""
        t = torch.from_numpy(pixels)
        if self.cuda:
            # NHWC uint8 permuted to NCHW *is* channels_last: no copy on either side.
            return t.pin_memory().to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        return t.permute(0, 3, 1, 2).contiguous().float().div_(255)

    def _one_pass_threads(self) -> None:
        """This thread's passes on the engine's threads per pass. A thread takes torch's default
        at its first operation, and that default is doubled while another thread's statistics pass
        runs (_on_every_pass): a thread started then would keep it. (get_num_threads is this
        thread's own count; setting it only when it differs keeps oneDNN's cache.)"""
        if torch.get_num_threads() != self.pass_threads:
            torch.set_num_threads(self.pass_threads)

    @contextlib.contextmanager
    def _on_every_pass(self):
        """This thread's forward passes meanwhile run on the threads of every tile pass. (torch's
        set_num_threads sets the calling thread's OpenMP team size, which threads that already ran
        a pass keep, and the default for threads that have not. It is set back to the engine's
        value, not to what it read: two large images at once would otherwise leave it doubled.)"""
        if self.tile_passes == 1:
            yield
            return
        torch.set_num_threads(self.pass_threads * self.tile_passes)
        try:
            yield
        finally:
            torch.set_num_threads(self.pass_threads)

    def _pass_stream(self):
        """On CUDA, this thread's own stream for what follows (CUDA_STREAM_PER_PASS)."""
        if not (self.cuda and CUDA_STREAM_PER_PASS):
            return contextlib.nullcontext()
        stream = getattr(self.per_thread, "stream", None)
        if stream is None:
            stream = self.per_thread.stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.default_stream(self.device))  # the weights' conversions
        return torch.cuda.stream(stream)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.cuda else contextlib.nullcontext()

    @staticmethod
    def _to_uint8(y: Tensor) -> np.ndarray:
        return (y * 255 + 0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()

    @torch.inference_mode()
    def stylize(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N,H,W,3) uint8 images of one size -> for each model, its (N,H,W,3) uint8 results."""
        passes = pass_slices(len(batch), *network_shape(*batch.shape[1:3], *self.texture))
        if len(passes) > 1:
            pieces = [self.stylize(batch[part]) for part in passes]
            return [np.concatenate(results) for results in zip(*pieces)]
        self._one_pass_threads()
        with self._pass_stream():
            return [self._to_uint8(y) for y in self._finished(self._to_device(batch))]

    def _finished(self, x: Tensor) -> list[Tensor]:
        """(N,3,H,W) in [0,1] on the device -> per model, its finished results (the same, float)."""
        seen = resize(x, network_shape(*x.shape[-2:], *self.texture))
        results = []
        ran = self.per_thread.__dict__.setdefault("ran", [set() for _ in self.specs])  # (describe's)
        for runtimes, chooser, spec, used in zip(self.runtimes, self.choosers, self.specs, ran):
            chosen = chooser.choose(runtimes, seen, wait=False)
            if chosen not in runtimes:  # a provisional runtime that set_layout dropped once the choice was made
                chosen = chooser.chosen
            used.add(chosen)
            padded = self._padded(seen) if self.compiled and chosen == "torch" else seen
            with self._autocast():
                y = runtimes[chosen](padded)[:len(seen)]
            results.append(finish(resize(y.float(), x.shape[-2:]), x, spec))
        return results

    def _padded(self, x: Tensor) -> Tensor:
        """A short batch for a compiled network, filled up to a full pass with copies of its last
        image: compiled with static shapes, each new batch length would compile again (11-25 s on
        an H200), while an image size compiles once. (Each image is normalised on its own: the
        copies change no other image's result.) A lone image is not filled: the engine retries a
        failed batch image by image, and a batch that ran out of memory must be retried smaller;
        it compiles a batch of one instead, once per image size."""
        full = min(self.batch_size, images_per_pass(*x.shape[-2:]))
        if len(x) >= full or len(x) == 1:
            return x
        filled = torch.cat([x, x[-1:].expand(full - len(x), *x.shape[1:])])
        return filled.contiguous(memory_format=torch.channels_last) if self.cuda else filled

    @property
    def device_jpeg_side(self) -> int:
        """JPEGs up to this long side are decoded here, on the device (codec.passthrough_jpeg;
        0: none): those that are not tiled, and only without a texture scale (kept simple: one
        image size for the network and the output)."""
        if not self.jpeg_on_device or self.texture != (1.0, None):
            return 0
        return self.tile_above

    @torch.inference_mode()
    def stylize_jpegs(self, datas: list[bytes], shape: tuple[int, int],
                      quality: int | None) -> list[np.ndarray | list[bytes]]:
        """Undecoded JPEGs of one size (height, width) -> for each model, its (N,H,W,3) uint8
        results or, given a JPEG quality, the results' JPEG files. nvJPEG decodes and encodes them
        on CUDA (torchvision.io), libjpeg-turbo on a CPU: only compressed bytes cross to the host."""
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

        passes = pass_slices(len(datas), *shape)
        if len(passes) > 1:
            pieces = [self.stylize_jpegs(datas[part], shape, quality) for part in passes]
            return [np.concatenate(r) if quality is None else sum(r, []) for r in zip(*pieces)]
        self._one_pass_threads()
        with self._pass_stream():
            if self.cuda:  # the decoder must not get a block that this stream's queued kernels still
                torch.cuda.current_stream(self.device).synchronize()  # read (idle, unless a batch failed midway)
            images = decode_jpeg([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas],
                                 mode=ImageReadMode.RGB, device=self.device)
            x = torch.stack(images).float().div_(255)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            results = self._finished(x)
            if quality is None:
                return [self._to_uint8(y) for y in results]
            encoded = []
            for y in results:
                y8 = [i.contiguous() for i in (y * 255 + 0.5).clamp_(0, 255).to(torch.uint8)]
                if self.cuda:  # torchvision's encoder reads them from a stream of its own, which does not
                    torch.cuda.current_stream(self.device).synchronize()  # wait for this one (vision#9060)
                files = encode_jpeg(y8, quality=quality)
                if self.cuda:  # and copies each file out on the legacy default stream, which this one does not follow
                    torch.cuda.current_stream(self.device).wait_stream(torch.cuda.default_stream(self.device))
                encoded.append(files_to_host(files))
            return encoded

    @torch.inference_mode()
    def stylize_large(self, pixels: np.ndarray) -> list[np.ndarray]:
        """One (H,W,3) uint8 image above tile_above -> for each model, its (H,W,3) uint8 result."""
        height, width = pixels.shape[:2]
        shape = network_shape(height, width, *self.texture)
        if shape == (height, width):
            return self._tiled(pixels, self.specs)
        batch = np.stack([pixels])  # (writable: torch warns about a decoder's read-only array)
        if max(shape) <= self.tile_above:  # scaled down below the tiling threshold: in one piece
            return [r[0] for r in self.stylize(batch)]
        # tiles of the image at the networks' size, rounded to uint8 as tiles are; finished at the output size
        x = self._to_device(batch)
        raw = [replace(spec, strength=1.0, preserve_colors=False) for spec in self.specs]
        styled = self._tiled(self._to_uint8(resize(x, shape))[0], raw)
        return [self._to_uint8(finish(resize(self._to_device(y[None]), (height, width)), x, spec))[0]
                for y, spec in zip(styled, self.specs)]

    def _tiled(self, pixels: np.ndarray, specs: list[ModelSpec]) -> list[np.ndarray]:
        """Each model's tiles on the backend it runs on (specs: self.specs' models, maybe retouched)."""
        self._one_pass_threads()
        small = statistics_image(pixels, self.tile_above)
        tiles = tile_count(*pixels.shape[:2], self.tile_size, self.tile_overlap)
        pool = self.tile_pool
        results = []
        for i, spec in enumerate(specs):
            run = self._onnx_tile_run(i, small, spec, tiles) or self._torch_tile_run(i, small, spec)
            batch_size = min(self.batch_size, images_per_pass(self.tile_size, self.tile_size))
            results.append(stylize_tiled(pixels, run, tile=self.tile_size, overlap=self.tile_overlap,
                                         batch_size=batch_size, map_batches=pool.map if pool else map))
        return results

    def _onnx_tile_run(self, i: int, small: np.ndarray, spec: ModelSpec, tiles: int):
        """Model i's tile run on onnxruntime for an image of `tiles` tiles, or None when it runs on
        PyTorch. An auto model not chosen yet (the job's first input is large) chooses on a crop of
        the statistics image. Tile graphs that cannot be exported or loaded leave this model's tiles
        on PyTorch, with a warning."""
        runtimes, chooser = self.runtimes[i], self.choosers[i]
        if not set(runtimes) & set(backends.ONNX_RUNTIMES):
            return None
        if chooser.chosen is None:
            crop = small[:backends.CALIBRATION_SIDE, :backends.CALIBRATION_SIDE]
            chooser.choose(runtimes, self._to_device(np.ascontiguousarray(crop)[None]))
        if chooser.chosen not in backends.ONNX_RUNTIMES:  # (openvino's tiles, either precision, run on onnxruntime's graphs)
            return None
        with self.tiles_lock:
            onnx_tiles = self.onnx_tiles[i]
            if onnx_tiles is None:
                sha, direction = self.exports[i]
                try:
                    graphs = backends.ensure_tile_graphs(Path(self.specs[i].path), sha, direction)
                    onnx_tiles = OnnxTiles(*graphs, self.pass_threads, self.pass_threads * self.tile_passes)
                except Exception as e:  # (a full or read-only cache, an exporter's error)
                    log.warning("%s: tiles on torch, the ONNX tile graphs failed: %s: %s", self.specs[i].path,
                                type(e).__name__, e)
                    onnx_tiles = False
                self.onnx_tiles[i] = onnx_tiles
        return onnx_tiles.runner(onnx_tiles.record(small), spec, tiles) if onnx_tiles else None

    def _torch_tile_run(self, i: int, small: np.ndarray, spec: ModelSpec):
        if not hasattr(self.per_thread, "tiled_nets"):
            self.per_thread.tiled_nets = [with_shared_stats(net) for net in self.nets]
        tiled = self.per_thread.tiled_nets[i]
        set_recording(tiled, True)
        with self._autocast(), self._on_every_pass():
            tiled(self._to_device(small[None]))  # one pass over the statistics image, on all the tiles' cores
        set_recording(tiled, False)

        @torch.inference_mode()  # (per thread: the tile pool's threads need their own)
        def run(tiles: np.ndarray) -> np.ndarray:
            self._one_pass_threads()
            x = self._to_device(tiles)
            with self._autocast():
                y = tiled(x)
            return finish(y.float(), x, spec).permute(0, 2, 3, 1).cpu().numpy()
        return run


class TranslateModels(StyleModels):
    """Translation networks (pix2pix, cyclegan: models/translation.py's Translator), each run in
    its spec's direction (a2b by default); otherwise exactly StyleModels: fully convolutional,
    tiled above tile_above (cyclegan's instance norms take the whole image's statistics)."""

    def __init__(self, specs: list[ModelSpec], device: torch.device, **settings):
        super().__init__(specs, device, **settings)
        for net, spec in zip(self.nets, specs):
            try:
                net.net.set_direction(spec.direction or "a2b")
            except ValueError as e:
                raise StageError(f"{spec.path}: {e}") from None

    def describe(self, parallel: int = 1) -> str:
        directions = ", ".join(spec.direction or "a2b" for spec in self.specs)
        return f"{super().describe(parallel)}, translating {directions}"


class GatysModels:
    """Gatys mode: a painting instead of a trained network (models/gatys/optimize.py). The same contract as
    StyleModels, but every image is optimised on its own, with gradients: `stylize` is deliberately
    not under inference_mode (gatys() also leaves it by itself, so either way works). An image
    larger than the last Gatys size is scaled down to it (the output has that size); one smaller is
    optimised at its own size, never upscaled (below MIN_SIZE: at MIN_SIZE, then scaled back). It
    never tiles: the style statistics are the whole picture's."""

    def __init__(self, specs: list[ModelSpec], device: torch.device, **_):
        from models.gatys.optimize import build_gatys_encoder
        from tasks.data.datasets import read_image

        if len(specs) != 1:
            raise StageError("Gatys mode runs one painting alone, without trained models in the same job")
        self.specs, self.device = specs, device
        self.spec, self.config = specs[0], specs[0].gatys
        if Path(self.spec.path).is_dir():  # a gatys model folder (the infer stage): its stored painting
            self.painting = load_model(Path(self.spec.path), "cpu")[0].image()
        else:
            self.painting = read_image(self.spec.path)
        self.encoder = build_gatys_encoder(self.config, device)

    def describe(self, parallel: int = 1) -> str:
        threads = torch.get_num_threads()
        return f"{self.device} (Gatys, {self.config.optimizer}, {parallel} images at once x {threads} threads)"

    def needs_tiles(self, height: int, width: int) -> bool:
        return False

    def sizes_for(self, long_side: int) -> tuple[int, ...]:
        """The configured coarse-to-fine sizes, ending at `long_side` (at most the last of them)."""
        from models.gatys.optimize import MIN_SIZE

        long_side = max(MIN_SIZE, min(long_side, self.config.sizes[-1]))
        return tuple(s for s in self.config.sizes if s < long_side) + (long_side,)

    def stylize(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N,H,W,3) uint8 images of one size -> [(N,h,w,3) uint8 results], h x w <= H x W."""
        from models.gatys.optimize import gatys, resize, shape_for

        x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().float().div(255).to(self.device)
        height, width = x.shape[-2:]
        out_shape = shape_for(height, width, min(max(height, width), self.config.sizes[-1]))
        config = replace(self.config, sizes=self.sizes_for(max(height, width)))
        styled = torch.cat([gatys(photo[None], self.painting, config, encoder=self.encoder, device=self.device).image
                            for photo in x]).to(self.device)
        x = resize(x, out_shape)
        return [StyleModels._to_uint8(finish(resize(styled, out_shape), x, self.spec))]

    def stylize_large(self, pixels: np.ndarray) -> list[np.ndarray]:
        return [r[0] for r in self.stylize(pixels[None])]


class AdainModels:
    """An adain model (models/adain/) after the job's paintings, with its controls (ModelSpec.adain):
    the paintings' statistics are computed once, here, not per image; with a manifest, each
    painting's the first time an input needs it. Never tiled: AdaIN takes the content statistics
    of the whole picture (cap the size with --max-size)."""

    def __init__(self, specs: list[ModelSpec], device: torch.device, texture_scale: float = 1.0,
                 work_size: int | None = None, **_):
        from models.adain.network import AdaINNet
        from tasks.data.datasets import read_image

        if len(specs) != 1:
            raise StageError("an AdaIN job runs one adain model alone")
        self.specs, self.device = specs, device
        self.spec, self.controls = specs[0], specs[0].adain
        self.texture = (texture_scale, work_size)
        self.net, sidecar = load_model(Path(self.spec.path), device)
        if not isinstance(self.net, AdaINNet):
            raise StageError(f"{self.spec.path}: a {sidecar.get('family', 'johnson')!r} model, not an adain one")
        self.styles = [(self._statistics(path), weight) for path, weight in self.controls.paintings]
        self.by_painting: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # a manifest's, as inputs need them
        self.mask = None
        if self.controls.mask:
            grey = luma(read_image(self.controls.mask)[None])[0, 0]
            # white: the first painting; black: the second, or none (the photo's own features)
            self.mask = torch.where(grey >= 0.5, 1, 2).to(device)

    @torch.inference_mode()
    def _statistics(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        from tasks.data.datasets import load_style_image, read_checked

        data, _ = read_checked(path)  # refused like any input (bombs, truncation), with its name
        # the same bytes, not a second read; load_style_image's own RGB rule (alpha dropped, not
        # composited on white as read_checked's decoding does), as before
        return self.net.style_of(load_style_image(Path(path), self.controls.style_size, data).to(self.device))

    def describe(self, parallel: int = 1) -> str:
        paintings = "a painting per input" if self.controls.manifest else f"{len(self.styles)} paintings"
        return (f"{self.device} (AdaIN, {paintings}, alpha {self.controls.alpha}, "
                f"{parallel} passes x {torch.get_num_threads()} threads)")

    def needs_tiles(self, height: int, width: int) -> bool:
        return False

    @torch.inference_mode()
    def stylize(self, batch: np.ndarray, paintings: list[str] | None = None) -> list[np.ndarray]:
        """paintings: per image, the manifest's painting ("" for the job's own paintings)."""
        from models.adain.network import stylize

        passes = pass_slices(len(batch), *network_shape(*batch.shape[1:3], *self.texture))
        if len(passes) > 1:
            return [np.concatenate([self.stylize(batch[part], paintings and paintings[part])[0] for part in passes])]
        styles = self.styles
        if paintings is not None:
            if not all(paintings):  # some images take the job's paintings: one at a time
                return [np.concatenate([self.stylize(batch[n:n + 1], [p] if p else None)[0]
                                        for n, p in enumerate(paintings)])]
            for p in set(paintings) - self.by_painting.keys():
                self.by_painting[p] = self._statistics(p)
            stats = [self.by_painting[p] for p in paintings]  # AdaIN's statistics are per image: stack them
            styles = [((torch.cat([m for m, _ in stats]), torch.cat([s for _, s in stats])), 1.0)]
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().float().div_(255).to(self.device)
        seen = resize(x, network_shape(*x.shape[-2:], *self.texture))
        y = stylize(self.net, PadToMinSide.pad(seen), styles, self.controls.alpha, self.mask)
        y = resize(y[..., : seen.shape[-2], : seen.shape[-1]], x.shape[-2:])
        return [StyleModels._to_uint8(finish(y, x, self.spec))]

    def stylize_large(self, pixels: np.ndarray) -> list[np.ndarray]:
        return [r[0] for r in self.stylize(pixels[None])]


class SampleModels:
    """A generator ("sample" family): each input is a (seed, label) pair (tasks/bulk/sources.py's
    SeedSource), each output the image the model draws for it, a pure function of (weights, seed,
    label) whatever batch it lands in."""

    def __init__(self, specs: list[ModelSpec], device: torch.device, **_):
        if len(specs) != 1:
            raise StageError("a sampling job runs one generator alone")
        self.specs, self.device = specs, device
        self.net, self.sidecar = load_model(Path(specs[0].path), device)
        self.conditional = bool(self.sidecar.get("conditional"))
        self.num_classes = int(self.sidecar.get("num_classes") or 0)
        set_truncation(self.net, specs[0].truncation, self.sidecar.get("family"))

    def describe(self, parallel: int = 1) -> str:
        return f"{self.device} (sampling {self.sidecar.get('family')}, {parallel} batches at once)"

    def needs_tiles(self, height: int, width: int) -> bool:
        return False

    @torch.inference_mode()
    def stylize(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N,1,2) int64 (seed, label) -> [(N,H,W,C) uint8 samples]."""
        seeds, labels = batch[:, 0, 0].tolist(), batch[:, 0, 1].tolist()
        if self.conditional:
            bad = [y for y in labels if not 0 <= y < self.num_classes]
            if bad:
                raise StageError(f"labels {sorted(set(bad))} are outside this model's 0..{self.num_classes - 1}")
        images = self.net.sample(seeds, labels if self.conditional else None)
        return [StyleModels._to_uint8(images)]

    def stylize_large(self, pixels: np.ndarray) -> list[np.ndarray]:
        raise AssertionError("samples are never tiled")


def _family_info(spec: ModelSpec) -> registry.FamilyInfo | None:
    """The registry's entry for a trained model's family; None for a Gatys painting or a model
    whose sidecar cannot be read (load_model says what is wrong with it)."""
    if spec.gatys is not None:
        return None
    try:
        return registry.info(read_sidecar(spec.path).get("family", "johnson"))
    except (StageError, KeyError):
        return None


def is_sampler(spec: ModelSpec) -> bool:
    info = _family_info(spec)
    return info is not None and info.runner == "sample"


def is_translator(spec: ModelSpec) -> bool:
    info = _family_info(spec)
    return info is not None and info.translates


def build_models(specs: list[ModelSpec], device: torch.device,
                 **settings) -> StyleModels | GatysModels | AdainModels | SampleModels:
    """Trained networks, a Gatys painting (ModelSpec.gatys), an adain model after paintings
    (ModelSpec.adain), a generator, or translation networks. settings: StyleModels' keywords (the
    others take what they need)."""
    if any(spec.adain is not None for spec in specs):
        return AdainModels(specs, device, **settings)
    gatys = any(spec.gatys is not None for spec in specs)
    sampler = any(is_sampler(spec) for spec in specs)
    if settings.get("texture_scale", 1.0) != 1 or settings.get("work_size") is not None:
        if gatys or sampler:
            raise StageError("a texture scale (texture_scale, work_size) is for trained image networks, "
                             "not Gatys optimisation or generators")
    if gatys:
        return GatysModels(specs, device, **settings)
    if sampler:
        return SampleModels(specs, device, **settings)
    translators = [is_translator(spec) for spec in specs]
    if any(translators):
        stray = [s.path for s, t in zip(specs, translators) if not t]
        if stray:
            raise StageError(f"a translation job runs translation models only, not {', '.join(stray)}")
        return TranslateModels(specs, device, **settings)
    if any(spec.direction for spec in specs):
        raise StageError("a direction is for translation models (pix2pix, cyclegan) only")
    return StyleModels(specs, device, **settings)
