"""train@<model>: fit one model of any family (models/registry.py) on its dataset.

    python -m tasks.train --model swirls

The generic loop, once for every family: the family (models/<family>/family.py) builds its
networks, optimizers and losses and takes one step at a time; this module owns the data stream
(tasks/data/datasets.py), checkpoints with every RNG state, bit-exact resume on CPU, the refusal to
resume a checkpoint made with other params, data or code (--fresh discards it), DDP, the loss log
and the saved model (models/weights.py: model.safetensors + model.json).

Reads data/processed/<dataset>/ (preprocess) and, for families that learn a painting,
data/raw/models/<model>/ (download); writes data/models/<model>/ and the loss curve
metrics/train/<model>.tsv. Checkpoints live in .cache/checkpoints/<model>.

Several processes (DDP), e.g. one per GPU, or two CPU processes with the gloo backend:

    torchrun --standalone --nproc_per_node=4 -m tasks.train --model swirls

Each process takes its own `batch_size` examples per step (the effective batch is
processes x batch_size); process 0 writes the log, the checkpoints and the model.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import stylepipe
from stylepipe import timings
from models import registry
from models.family import TrainInputs, Trainer
from models.weights import save_model
from stylepipe.config import Params, load_params
from stylepipe.devices import cpu_count, pick_device
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file
from stylepipe.stage import run_main
from tasks.data.datasets import (LABELLED_FILES, ContentStylePairs, LabelledImages, RandomCrops, StepSamples,
                                 TranslationImages, files_sha256, find_style_image, list_domains, list_train_images,
                                 load_labelled, load_style_image)

log = logging.getLogger("stylepipe.train")

CHECKPOINT_FILE = "checkpoint.pt"
PREVIEW_DIR = "previews"  # inside the model folder: fixed-noise sample grids during training
ROOT = Path(__file__).resolve().parents[1]
# Settings that change how a run is executed, not what it computes: not part of the resume check.
# Settings that do not change what is learned (a preset or recipe only fills in other settings, compared themselves).
RUN_ONLY = {"device", "workers", "threads", "log_every", "checkpoint_every", "channels_last", "compile", "preset",
            "recipe"}


@dataclass(frozen=True)
class Paths:
    """Where one model's run reads and writes; the defaults are the DVC stage's."""

    data: Path                 # data/processed/<dataset>
    inputs: Path               # data/raw/models/<model>: its painting, if the family learns one
    model_dir: Path            # data/models/<model>
    log: Path                  # metrics/train/<model>.tsv
    checkpoints: Path          # .cache/checkpoints/<model>

    @classmethod
    def for_model(cls, params: Params, model: str, root: Path = Path(".")) -> Paths:
        dataset = params.model(model).dataset
        return cls(root / "data/processed" / dataset, root / "data/raw/models" / model,
                   root / "data/models" / model, root / "metrics/train" / f"{model}.tsv",
                   root / ".cache/checkpoints" / model)


# ---------------------------------------------------------------------------------- data


@dataclass
class TrainData:
    dataset: Dataset
    sha256: str                # identity of the training data (part of the resume check)
    description: str
    num_classes: int = 0
    channels: int = 3
    image_size: int = 0
    painting: Path | None = None  # families trained on many paintings: the one the saved network defaults to


def open_data(kind: str, data_dir: Path, tp, seed: int) -> TrainData:
    if kind == "photos":
        files = list_train_images(data_dir / "train")
        size = getattr(tp, "image_size", 256)  # gatys trains nothing and has no crop size
        if getattr(tp, "styles", None):  # photos and paintings (adain): a sibling processed dataset
            return open_pairs(files, data_dir.parent / tp.styles, tp, seed)
        return TrainData(RandomCrops(files, size, seed), files_sha256(files), f"{len(files)} photos")
    if kind == "labelled":
        path = data_dir / LABELLED_FILES["train"]
        images, labels = load_labelled(path)
        return TrainData(LabelledImages(images, labels, seed), sha256_file(path),
                         f"{len(images)} labelled {images.shape[1]}x{images.shape[2]} images",
                         num_classes=int(labels.max()) + 1, channels=images.shape[3], image_size=images.shape[1])
    if kind in ("paired", "unpaired"):
        a, b = list_domains(data_dir / "train", paired=kind == "paired")
        dataset = TranslationImages(a, b, kind == "paired", tp.image_size, tp.crop_load_size, tp.flip, seed)
        what = f"{len(a)} pairs" if kind == "paired" else f"{len(a)} A and {len(b)} B images"
        return TrainData(dataset, files_sha256(a + b), what)
    raise StageError(f"the training loop cannot read {kind} datasets yet")


def open_pairs(photos: list[Path], styles_dir: Path, tp, seed: int) -> TrainData:
    """(photo crop, painting crop) pairs. The paintings' val split is held out; the first held-out
    painting (else the first one) becomes the saved network's default painting."""
    check_preprocessed(styles_dir)
    paintings = list_train_images(styles_dir / "train")
    held_out = sorted((styles_dir / "val").glob("*.png")) if (styles_dir / "val").is_dir() else []
    sha = hashlib.sha256(f"{files_sha256(photos)}\n{files_sha256(paintings)}".encode()).hexdigest()
    return TrainData(ContentStylePairs(photos, paintings, tp.image_size, tp.style_size, seed), sha,
                     f"{len(photos)} photos x {len(paintings)} paintings ({len(held_out)} held out)",
                     painting=(held_out or paintings)[0])


def check_preprocessed(processed: Path) -> None:
    """A dataset another one's model also reads (adain's paintings) is not a DVC dep of train@ (see
    tasks/download.py record_styles): refuse to train on it missing or older than its raw files."""
    import pyarrow.parquet as pq

    raw = processed.parents[1] / "raw" / "datasets" / processed.name / "manifest.json"
    manifest = processed / "manifest.parquet"
    wanted = {e["sha256"] for e in json.loads(raw.read_text())} if raw.is_file() else set()
    have = set(pq.read_table(manifest, columns=["sha256"]).column("sha256").to_pylist()) if manifest.is_file() else set()
    if not manifest.is_file() or wanted - have:
        raise StageError(f"{processed} is missing or older than {raw.parent}: run `dvc repro "
                         f"preprocess@{processed.name}` (or `stylepipe run`) first")


# ---------------------------------------------------------------------------------- helpers


def code_version(family: str) -> str:
    """The package version and a hash of the code the run computed with (not the git commit: the
    sidecar is a DVC output, and a commit hash would change its bytes on every commit)."""
    blob = json.dumps(code_hashes(family), sort_keys=True).encode()
    return f"{stylepipe.__version__}+code-{hashlib.sha256(blob).hexdigest()[:12]}"


def code_hashes(family: str) -> dict[str, str]:
    """sha256 of every file whose change changes what a run of `family` computes."""
    files = [ROOT / "tasks/train.py", ROOT / "tasks/data/datasets.py", *registry.load(family).code_files(ROOT)]
    return {str(f.relative_to(ROOT)): sha256_file(f) for f in files if f.is_file()}


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


def trainer_state(trainer: Trainer) -> dict:
    return {"modules": {k: m.state_dict() for k, m in trainer.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in trainer.opts.items()}}


def load_trainer_state(trainer: Trainer, state: dict) -> None:
    for k, m in trainer.modules().items():
        m.load_state_dict(state["modules"][k])
    for k, o in trainer.opts.items():
        o.load_state_dict(state["optimizers"][k])


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
            f"resume, or discard it: `python -m tasks.train --model {config.get('model')} --fresh` "
            f"or delete {path.parent}")
    return ckpt


def log_header(loss_names: tuple[str, ...]) -> str:
    return "step\t" + "\t".join(loss_names) + "\n"


def rewrite_log(log_path: Path, header: str, rows: list[str]) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(header + "".join(rows), encoding="utf-8")


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


def mean_over_processes(losses: dict[str, torch.Tensor], names: tuple[str, ...], world: int) -> dict[str, float]:
    """This step's losses averaged over all processes (each saw its own examples)."""
    stacked = torch.stack([losses[k].detach().float() for k in names])
    if world > 1:
        dist.all_reduce(stacked)
        stacked = stacked / world
    return dict(zip(names, stacked.tolist()))


def loader_workers(asked: int | None, cuda: bool, world: int, in_memory: bool) -> int:
    """DataLoader processes: train.workers, else none on a CPU or for data held in memory, and on
    CUDA up to 8 per training process. On an H200 a pix2pix step (256 px, batch 16) took 13 ms, and
    one process decoding and jittering its 16 PNG pairs takes 108 ms on this project's CPU: with the
    data on the main process stylepipe trained 5.7 steps/s against 79 for the step alone."""
    if asked is not None:
        return asked
    if not cuda or in_memory:
        return 0
    return max(1, min(8, (cpu_count() - world) // world))


def _on_step(step: int) -> None:
    """Called after every completed step; tests replace it to simulate a kill."""


def save_preview(trainer: Trainer, path: Path) -> None:
    """A generator's fixed-noise sample grid (families with a `preview()`), written atomically."""
    from torchvision.utils import save_image

    preview = getattr(trainer, "preview", None)
    if preview is None:
        return
    images = preview()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_image(images.float().cpu(), str(tmp), nrow=int(len(images) ** 0.5), padding=1, format="png")
    os.replace(tmp, path)


def remove_checkpoints(checkpoint_dir: Path) -> None:
    if not checkpoint_dir.is_dir():
        return
    (checkpoint_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    for leftover in checkpoint_dir.glob("*.tmp"):
        leftover.unlink()
    try:
        checkpoint_dir.rmdir()
    except OSError:
        pass  # holds something we did not write: leave it


# ---------------------------------------------------------------------------------- training


def train(params: Params, model: str, paths: Paths | None = None, *, fresh: bool = False,
          style_image: Path | None = None, keep_seconds: bool = False) -> dict:
    """Train `model` (a name in params.yaml `models:`); returns the sidecar written beside the weights,
    plus `seconds`. The training time goes to metrics/timings.json, not into the sidecar (a DVC
    output: its bytes must not depend on the machine's speed), unless keep_seconds (tools outside the
    DAG, e.g. `stylepipe styles`).
    fresh: discard an existing checkpoint instead of resuming from it.
    style_image: the painting itself, instead of the one download put under paths.inputs."""
    entry = params.model(model)
    paths = paths or Paths.for_model(params, model)
    info, tp = registry.info(entry.family), entry.train
    family = registry.load(entry.family)

    data = open_data(info.data, paths.data, tp, tp.seed)
    style_path = None
    if info.needs_style:
        style_path = Path(style_image) if style_image is not None else find_style_image(paths.inputs)
    elif data.painting is not None:
        style_path = data.painting
    device = pick_device(tp.device)
    cuda = device.type == "cuda"
    rank, world = start_processes(device)
    if cuda and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    # train.threads, else an explicit OMP_NUM_THREADS (torchrun sets it to 1 per process), else all cores
    if not cuda and (tp.threads or not os.environ.get("OMP_NUM_THREADS")):
        torch.set_num_threads(tp.threads or cpu_count())

    config = {
        "model": model, "family": entry.family, "dataset": entry.dataset,
        **{k: v for k, v in tp.model_dump().items() if k not in RUN_ONLY},
        "train_data_sha256": data.sha256, "device": device.type, "processes": world,
    }
    if style_path is not None:
        config["style_image_sha256"] = sha256_file(style_path)
    code = code_hashes(entry.family)
    chash = config_hash(config, code)
    if rank == 0:
        log.info("model %s (%s): %s%s, %s%s", model, entry.family, data.description,
                 f", painting {style_path}" if style_path else "", device,
                 f", {world} processes" if world > 1 else "")

    torch.manual_seed(tp.seed)
    random.seed(tp.seed)
    np.random.seed(tp.seed)
    bf16 = tp.precision == "bf16" or (tp.precision == "auto" and cuda)
    channels_last = tp.channels_last if tp.channels_last is not None else cuda
    inputs = TrainInputs(device, num_classes=data.num_classes, channels=data.channels, image_size=data.image_size,
                         painting=(lambda size: load_style_image(style_path, size)) if style_path else None,
                         bf16=bf16, channels_last=channels_last)
    trainer = family.make_trainer(tp, inputs)
    names = trainer.loss_names

    ckpt_path = paths.checkpoints / CHECKPOINT_FILE
    if fresh and rank == 0 and ckpt_path.is_file():
        log.info("discarding checkpoint %s (--fresh)", ckpt_path)
        ckpt_path.unlink()
    barrier(world)
    ckpt = load_checkpoint(ckpt_path, config, code)
    start, window, seconds_before = 0, {k: 0.0 for k in names}, 0.0
    same_start_everywhere(ckpt["step"] if ckpt is not None else 0, world, paths.checkpoints)
    if ckpt is not None:
        load_trainer_state(trainer, ckpt["trainer"])
        set_rng_state(ckpt["rng"])
        start, window, seconds_before = ckpt["step"], dict(ckpt["window"]), ckpt["seconds"]
        if rank == 0:
            log.info("resuming from %s at step %d of %d", ckpt_path, start, tp.steps)
            # DVC deletes a stage's outputs (the log) before running it: the checkpoint keeps the rows
            rows = ckpt.get("log_rows") or log_rows_upto(paths.log, start)
            rewrite_log(paths.log, log_header(names), rows)
    elif rank == 0:
        rewrite_log(paths.log, log_header(names), [])

    loader = DataLoader(data.dataset, batch_size=tp.batch_size,
                        sampler=StepSamples(start, tp.steps, tp.batch_size, rank, world),
                        num_workers=loader_workers(tp.workers, cuda, world, info.data == "labelled"),
                        pin_memory=cuda, persistent_workers=False,
                        # its own generator: starting an iterator draws a seed, which must not move
                        # the global RNG the families' steps draw from (or a resume would diverge)
                        generator=torch.Generator().manual_seed(tp.seed))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for net in trainer.nets.values():
        net.to(memory_format=layout)
        if tp.compile:
            net.compile()  # in place: the state_dict keys (checkpoints, safetensors) stay the same
    if world > 1:
        trainer.wrap(DistributedDataParallel)  # averages gradients across processes
    # The whole step under autocast (the family owns its forward and backward passes; autocast picks
    # each op's dtype in the forward pass, and the backward pass follows it).
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    for m in trainer.nets.values():
        m.train()
    bar = tqdm(total=tp.steps, initial=start, desc=f"train {model}", unit="step", file=sys.stderr,
               mininterval=1.0, dynamic_ncols=True, disable=rank != 0)
    step = start
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True, memory_format=layout) if v.dim() == 4 else
                 v.to(device, non_blocking=True) for k, v in batch.items()}
        trainer.step = step
        with autocast:
            losses = trainer.train_step(batch)
        step += 1

        values = mean_over_processes(losses, names, world)
        for k in names:
            window[k] += values[k]
        bar.update(1)
        bar.set_postfix({k: f"{values[k]:.3g}" for k in names}, refresh=False)
        if step % tp.log_every == 0 or step == tp.steps:
            n = step % tp.log_every or min(tp.log_every, step)
            last = {k: window[k] / n for k in names}
            if rank == 0:
                with open(paths.log, "a", encoding="utf-8") as f:
                    f.write(f"{step}\t" + "\t".join(f"{last[k]:.6g}" for k in names) + "\n")
            window = {k: 0.0 for k in names}
        if step % tp.checkpoint_every == 0 and step < tp.steps and rank == 0:
            save_checkpoint(ckpt_path, {
                "config_hash": chash, "config": config, "code": code, "step": step,
                "trainer": trainer_state(trainer), "rng": rng_state(),
                "window": window, "seconds": seconds_before + time.perf_counter() - t0,
                "log_rows": log_rows_upto(paths.log, step),
            })
        if rank == 0 and getattr(tp, "preview_every", 0) and (step % tp.preview_every == 0 or step == tp.steps):
            save_preview(trainer, paths.model_dir / PREVIEW_DIR / f"step-{step:07d}.png")
        _on_step(step)
    bar.close()
    if world > 1:
        dist.destroy_process_group()

    seconds = seconds_before + time.perf_counter() - t0
    sidecar = {
        "family": entry.family, "style": model, "model": model, "dataset": entry.dataset,
        "train": tp.model_dump(exclude=RUN_ONLY), **trainer.sidecar(),
        "steps": tp.steps, "batch_size": tp.batch_size, "seed": tp.seed,
        "train_data_sha256": data.sha256, "style_image_sha256": config.get("style_image_sha256"),
        "code_version": code_version(entry.family), "device": str(device),
        "processes": world, "final_losses": {k: round(v, 6) for k, v in last.items()},
    }
    if rank != 0:
        return sidecar
    net = trainer.inference_network().eval()
    if keep_seconds:
        sidecar["seconds"] = round(seconds, 1)
    else:
        # the thread count beside the device: with another count the weights differ from the first steps
        timings.record(model, {"train_seconds": round(seconds, 1), "train_device": str(device),
                               "train_threads": torch.get_num_threads()},
                       path=paths.log.parent.parent / timings.TIMINGS.name)
    save_model(paths.model_dir, net, sidecar)
    remove_checkpoints(paths.checkpoints)
    log.info("model %s: %d steps in %.0f s; final losses %s; wrote %s", model, tp.steps, seconds,
             sidecar["final_losses"], paths.model_dir)
    return {**sidecar, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model name from params.yaml `models`")
    parser.add_argument("--fresh", action="store_true",
                        help="discard a checkpoint left by an interrupted run instead of resuming from it")
    args = parser.parse_args(argv)
    run_main("train", lambda: train(load_params(), args.model, fresh=args.fresh))


if __name__ == "__main__":
    main()
