"""train@<style>: fit one feed-forward style-transfer network to one style image.

    python -m tasks.train --style swirls

Reads data/processed/train/*.png (preprocess) and the style image under data/raw/styles/<style>
(download); writes data/models/<style>/ (model.safetensors + model.json) and the loss curve
metrics/train/<style>.tsv. Checkpoints in .cache/checkpoints/<style> let a killed run resume;
on CPU a resumed run ends bit-identical to an uninterrupted one. A checkpoint made with other
params or other training code is refused, never silently mixed in (--fresh discards it).

Several processes (DDP), e.g. one per GPU, or two CPU processes with the gloo backend:

    torchrun --standalone --nproc_per_node=4 -m tasks.train --style swirls

Each process takes its own `train.batch_size` crops per step (the effective batch is
processes x batch_size); process 0 writes the log, the checkpoints and the model.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageOps
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

import stylepipe
from models.encoders import build_encoder, check_layers, default_layers
from models.losses import PerceptualLoss
from models.transformer import build_network
from models.weights import save_model
from stylepipe.config import Params, TrainParams, load_params
from stylepipe.devices import cpu_count, pick_device
from stylepipe.hashing import sha256_file
from stylepipe.errors import StageError
from stylepipe.stage import run_main
from tasks.images import is_image_file

log = logging.getLogger("stylepipe.train")

CHECKPOINT_FILE = "checkpoint.pt"
TSV_HEADER = "step\ttotal\tcontent\tstyle\ttv\n"
LOSS_KEYS = ("total", "content", "style", "tv")
# Source files whose change changes what a run computes; part of the checkpoint's config hash.
CODE_FILES = ("models/encoders.py", "models/losses.py", "models/transformer.py", "tasks/train.py")


# ---------------------------------------------------------------------------------- inputs


def find_style_image(style_dir: Path) -> Path:
    files_dir = Path(style_dir) / "files"
    files = sorted(p for p in files_dir.rglob("*") if p.is_file()) if files_dir.is_dir() else []
    images = [p for p in files if is_image_file(p)]
    if not images:
        listed = ", ".join(str(p.relative_to(files_dir)) for p in files[:5])
        found = f" ({len(files)} files, none of them an image: {listed})" if files else ""
        raise StageError(f"no style image under {files_dir}{found}; run the download stage first")
    if len(images) > 1:
        raise StageError(f"expected exactly one style image under {files_dir}, found {len(images)}: "
                         f"{', '.join(str(p.relative_to(files_dir)) for p in images[:5])}")
    return images[0]


def list_train_images(train_dir: Path) -> list[Path]:
    files = sorted(Path(train_dir).glob("*.png")) if Path(train_dir).is_dir() else []
    if not files:
        raise StageError(f"no training images (*.png) in {train_dir}; run the preprocess stage first")
    return files


def train_data_sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:  # sorted by name
        h.update(f"{p.name}\t{sha256_file(p)}\n".encode())
    return h.hexdigest()


def load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, Image.DecompressionBombError) as e:
        raise StageError(f"{path}: cannot read image: {e}") from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3,H,W) float32 in [0,1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255)


def load_style_image(path: Path, size: int) -> torch.Tensor:
    """The painting, its long side resized to `size` (the scale its texture is learned at)."""
    img = load_rgb(path)
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    return to_tensor(img)


class RandomCrops(Dataset):
    """Sample i of the whole run -> a random crop (+ flip) of a training image, a pure function of
    (seed, i): the data stream does not depend on workers or on where a run was resumed."""

    def __init__(self, files: list[Path], size: int, seed: int):
        self.files, self.size, self.seed = files, size, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self.files)
        epoch, j = divmod(i, n)
        order = np.random.default_rng([self.seed, 0, epoch]).permutation(n)
        rng = np.random.default_rng([self.seed, 1, i])
        img = load_rgb(self.files[order[j]])
        if min(img.size) < self.size:
            s = self.size / min(img.size)
            img = img.resize((max(self.size, round(img.width * s)), max(self.size, round(img.height * s))),
                             Image.BICUBIC)
        x0 = int(rng.integers(0, img.width - self.size + 1))
        y0 = int(rng.integers(0, img.height - self.size + 1))
        img = img.crop((x0, y0, x0 + self.size, y0 + self.size))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(img)


class StepSamples(Sampler):
    """The sample indices one process consumes for steps [start, steps): step s of process r
    (of `world`) takes samples (s*world + r)*batch ... +batch, so every sample of the run is used
    once whatever the process count, and one process reproduces the single-process stream."""

    def __init__(self, start: int, steps: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __len__(self) -> int:
        return (self.steps - self.start) * self.batch

    def __iter__(self):
        for step in range(self.start, self.steps):
            first = (step * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)


# ---------------------------------------------------------------------------------- helpers


def code_version() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, cwd=Path(__file__).resolve().parents[1])
        rev = commit.stdout.strip() if commit.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{stylepipe.__version__}+{rev or 'unknown'}"


def resolve_layers(tp: TrainParams) -> tuple[list[str], list[str]]:
    style_default, content_default = default_layers(tp.encoder)
    style_layers = list(tp.style_layers) or style_default
    content_layers = list(tp.content_layers) or content_default
    check_layers(tp.encoder, style_layers, "train.style_layers entry")
    check_layers(tp.encoder, content_layers, "train.content_layers entry")
    return style_layers, content_layers


def code_hashes() -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    return {f: sha256_file(root / f) for f in CODE_FILES if (root / f).is_file()}


def config_hash(config: dict, code: dict[str, str]) -> str:
    blob = json.dumps({"config": config, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def describe_mismatch(ckpt: dict, config: dict, code: dict[str, str]) -> str:
    """What differs between a checkpoint's run and this one, in words a user can act on."""
    old_config, old_code = ckpt.get("config"), ckpt.get("code")
    if not isinstance(old_config, dict) or not isinstance(old_code, dict):
        return "it was written by an older stylepipe that did not record its configuration"
    changes = [f"{k}: {old_config.get(k)!r} -> {config.get(k)!r}"
               for k in sorted(set(old_config) | set(config)) if old_config.get(k) != config.get(k)]
    changes += [f"{f} changed" for f in sorted(set(old_code) | set(code)) if old_code.get(f) != code.get(f)]
    return "; ".join(changes) or "its configuration hash differs"


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class ResumeRefused(StageError):
    pass


def load_checkpoint(path: Path, config: dict, code: dict[str, str]) -> dict | None:
    """The checkpoint to resume from, or None to start fresh. A checkpoint of a different run
    (other params, data, style image or training code) is refused: resuming it would give a model
    that belongs to neither configuration, and deleting it silently would throw away hours."""
    if not path.is_file():
        return None
    try:
        # on the CPU: RNG states must be CPU tensors; load_state_dict moves the rest to the device
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not ours, or damaged after the fact (saves are atomic)
        log.warning("ignoring unreadable checkpoint %s: %s", path, e)
        return None
    if not isinstance(ckpt, dict):
        log.warning("ignoring %s: not a stylepipe checkpoint", path)
        return None
    if ckpt.get("config_hash") != config_hash(config, code):
        raise ResumeRefused(
            f"refusing to resume from {path} (step {ckpt.get('step')}): it was made with a different "
            f"configuration ({describe_mismatch(ckpt, config, code)}). Restore those settings to "
            f"resume, or discard it: `python -m tasks.train --style {config.get('style')} --fresh` "
            f"or delete {path.parent}")
    return ckpt


def rewrite_log(log_path: Path, rows: list[str]) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(TSV_HEADER + "".join(rows), encoding="utf-8")


def log_rows_upto(log_path: Path, step: int) -> list[str]:
    """The rows of an interrupted run's log with step <= `step` (the checkpoint it resumes from)."""
    if not log_path.is_file():
        return []
    rows = log_path.read_text(encoding="utf-8").splitlines(keepends=True)[1:]
    return [r for r in rows if r.strip() and int(r.split("\t", 1)[0]) <= step]


def start_processes(device: torch.device) -> tuple[int, int]:
    """(rank, world size): (0, 1) for a plain run; under torchrun, joins its process group (NCCL
    on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def same_start_everywhere(start: int, world: int, checkpoint_dir: Path) -> None:
    """Every process must resume from the same step, or DDP would hang mid-step: on several
    machines the checkpoint folder has to be shared storage."""
    if world == 1:
        return
    steps = torch.tensor([start, -start])
    dist.all_reduce(steps, op=dist.ReduceOp.MAX)
    if steps[0].item() != -steps[1].item():
        raise StageError(f"the processes found different checkpoints in {checkpoint_dir} (steps "
                         f"{-steps[1].item()} to {steps[0].item()}): put it on storage every machine shares")


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def mean_over_processes(losses: dict[str, torch.Tensor], world: int) -> dict[str, float]:
    """This step's losses averaged over all processes (each saw its own crops)."""
    stacked = torch.stack([losses[k].detach().float() for k in LOSS_KEYS])
    if world > 1:
        dist.all_reduce(stacked)
        stacked = stacked / world
    return dict(zip(LOSS_KEYS, stacked.tolist()))


def _on_step(step: int) -> None:
    """Called after every completed step; tests replace it to simulate a kill."""


# ---------------------------------------------------------------------------------- training


def train(
    params: Params,
    style: str,
    train_dir: Path = Path("data/processed/train"),
    style_dir: Path | None = None,
    model_dir: Path | None = None,
    log_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    fresh: bool = False,
    style_image: Path | None = None,
) -> dict:
    """Train the network for `style`; returns the sidecar written beside the weights.
    fresh: discard an existing checkpoint instead of resuming from it.
    style_image: the painting itself, instead of the one download put under style_dir."""
    if style not in params.styles:
        raise StageError(f"unknown style {style!r}; params.yaml defines: {', '.join(params.styles)}")
    style_dir = Path(style_dir) if style_dir is not None else Path("data/raw/styles") / style
    model_dir = Path(model_dir) if model_dir is not None else Path("data/models") / style
    log_path = Path(log_path) if log_path is not None else Path("metrics/train") / f"{style}.tsv"
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else Path(".cache/checkpoints") / style
    tp = params.train
    content_weight, style_weight = params.style_loss_weights(style)
    style_layers, content_layers = resolve_layers(tp)

    files = list_train_images(train_dir)
    style_path = Path(style_image) if style_image is not None else find_style_image(style_dir)
    data_sha, style_sha = train_data_sha256(files), sha256_file(style_path)
    device = pick_device(tp.device)
    cuda = device.type == "cuda"
    rank, world = start_processes(device)
    if cuda and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    # An explicit OMP_NUM_THREADS wins; torchrun sets it to 1 per process unless it is given.
    if not cuda and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(cpu_count())

    config = {
        "style": style, **tp.model_dump(exclude={"device", "workers", "log_every", "checkpoint_every",
                                                 "style_layers", "content_layers"}),
        "style_layers": style_layers, "content_layers": content_layers,
        "content_weight": content_weight, "style_weight": style_weight,
        "train_data_sha256": data_sha, "style_image_sha256": style_sha, "device": device.type,
        "processes": world,
    }
    code = code_hashes()
    chash = config_hash(config, code)
    if rank == 0:
        log.info("style %s: %d training images, style image %s, %s network, %s encoder, %s%s",
                 style, len(files), style_path, tp.network, tp.encoder, device,
                 f", {world} processes" if world > 1 else "")

    torch.manual_seed(tp.seed)
    random.seed(tp.seed)
    np.random.seed(tp.seed)
    net = build_network(tp.network).to(device)
    encoder = build_encoder(tp.encoder, list(dict.fromkeys(style_layers + content_layers))).to(device)
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        encoder = encoder.to(memory_format=torch.channels_last)
    painting = load_style_image(style_path, tp.style_size).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        loss_fn = PerceptualLoss(encoder, painting, style_layers, content_layers,
                                 content_weight, style_weight, tp.tv_weight)
    optimizer = torch.optim.Adam(net.parameters(), lr=tp.lr)

    ckpt_path = checkpoint_dir / CHECKPOINT_FILE
    if fresh and rank == 0 and ckpt_path.is_file():
        log.info("discarding checkpoint %s (--fresh)", ckpt_path)
        ckpt_path.unlink()
    barrier(world)
    ckpt = load_checkpoint(ckpt_path, config, code)
    start, window, seconds_before = 0, {k: 0.0 for k in LOSS_KEYS}, 0.0
    same_start_everywhere(ckpt["step"] if ckpt is not None else 0, world, checkpoint_dir)
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        start, window, seconds_before = ckpt["step"], dict(ckpt["window"]), ckpt["seconds"]
        if rank == 0:
            log.info("resuming from %s at step %d of %d", ckpt_path, start, tp.steps)
            rewrite_log(log_path, log_rows_upto(log_path, start))
    elif rank == 0:
        rewrite_log(log_path, [])

    batch = tp.batch_size
    loader = DataLoader(RandomCrops(files, tp.image_size, tp.seed), batch_size=batch,
                        sampler=StepSamples(start, tp.steps, batch, rank, world),
                        num_workers=tp.workers, pin_memory=cuda, persistent_workers=False)
    model = DistributedDataParallel(net) if world > 1 else net  # averages gradients across processes
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    net.train()
    bar = tqdm(total=tp.steps, initial=start, desc=f"train {style}", unit="step", file=sys.stderr,
               mininterval=1.0, dynamic_ncols=True, disable=rank != 0)
    step = start
    for content in loader:
        content = content.to(device, non_blocking=True)
        if cuda:
            content = content.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            losses = loss_fn(model(content), content)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        step += 1

        values = mean_over_processes(losses, world)
        for k in LOSS_KEYS:
            window[k] += values[k]
        bar.update(1)
        bar.set_postfix({k: f"{values[k]:.3g}" for k in LOSS_KEYS}, refresh=False)
        if step % tp.log_every == 0 or step == tp.steps:
            n = step % tp.log_every or min(tp.log_every, step)
            last = {k: window[k] / n for k in LOSS_KEYS}
            if rank == 0:
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(f"{step}\t" + "\t".join(f"{last[k]:.6g}" for k in LOSS_KEYS) + "\n")
            window = {k: 0.0 for k in LOSS_KEYS}
        if step % tp.checkpoint_every == 0 and step < tp.steps and rank == 0:
            save_checkpoint(ckpt_path, {
                "config_hash": chash, "config": config, "code": code, "step": step,
                "model": net.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(),
                "window": window, "seconds": seconds_before + time.perf_counter() - t0,
            })
        _on_step(step)
    bar.close()
    if world > 1:
        dist.destroy_process_group()

    seconds = seconds_before + time.perf_counter() - t0
    sidecar = {
        "style": style, "network": tp.network, "encoder": tp.encoder,
        "style_layers": style_layers, "content_layers": content_layers,
        "weights": {"content": content_weight, "style": style_weight, "tv": tp.tv_weight},
        "steps": tp.steps, "batch_size": tp.batch_size, "lr": tp.lr, "image_size": tp.image_size,
        "style_size": tp.style_size, "seed": tp.seed,
        "train_data_sha256": data_sha, "style_image_sha256": style_sha,
        "code_version": code_version(), "seconds": round(seconds, 1), "device": str(device),
        "processes": world, "final_losses": {k: round(v, 6) for k, v in last.items()},
    }
    if rank != 0:
        return sidecar
    save_model(model_dir, net.eval(), sidecar)
    if checkpoint_dir.is_dir():
        ckpt_path.unlink(missing_ok=True)
        for leftover in checkpoint_dir.glob("*.tmp"):
            leftover.unlink()
        try:
            checkpoint_dir.rmdir()
        except OSError:
            pass  # holds something we did not write: leave it
    log.info("style %s: %d steps in %.0f s; final losses %s; wrote %s", style, tp.steps, seconds,
             sidecar["final_losses"], model_dir)
    return sidecar


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--style", required=True, help="a style name from params.yaml `styles`")
    parser.add_argument("--fresh", action="store_true",
                        help="discard a checkpoint left by an interrupted run instead of resuming from it")
    args = parser.parse_args(argv)
    run_main("train", lambda: train(load_params(), args.style, fresh=args.fresh))


if __name__ == "__main__":
    main()
