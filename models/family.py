"""The model-family contract: what a family (models/<name>/) gives the generic stages.

    family.py   FAMILY = Family(...)            the entry point, found by name (models/registry.py)
    params.py   TrainParams, InferParams         its settings, torch-free

The stages own everything generic, once: data loading (tasks/data/datasets.py), the training loop
with checkpoints, RNG states, bit-exact resume, refusal of a resume with another configuration,
DDP and logging (tasks/train.py); weights as safetensors + a JSON sidecar (models/weights.py); the
bulk engine (tasks/bulk/). A family owns only what differs:

- `Trainer`: its networks, optimizers and losses, and one training step (a GAN steps D, then G).
  Everything with state lives in `modules()` and `opts` (its optimizers), which the loop checkpoints; any
  randomness comes from torch's global RNG, which the loop checkpoints too. So a resumed run ends
  bit-identical to an uninterrupted one (on CPU) without the family doing anything for it.
- `build(sidecar)`: the inference network from its sidecar, before the weights are loaded into it.
- the runner: for an "image" family the inference network maps (N,3,H,W) in [0,1] to the same;
  for a "sample" family it has `sample(seeds, labels) -> (N,C,H,W)` in [0,1], each image a pure
  function of (weights, seed, label), whatever batch it is computed in.

tests/models/test_family_contract.py runs every registered family through that contract.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def lr_factor(step: int, steps: int, decay_fraction: float) -> float:
    """1 until the last decay_fraction of the steps, then linearly down to 1/(decay steps + 1) at
    the last step (junyanz's 'linear' policy, per step instead of per epoch)."""
    decay = round(steps * decay_fraction)
    start = steps - decay
    if step < start or decay == 0:
        return 1.0
    return 1.0 - (step - start + 1) / (decay + 1)


def set_lr(opts: dict[str, torch.optim.Optimizer], lr: float) -> None:
    """The learning rate as a pure function of the step: nothing extra to checkpoint."""
    for opt in opts.values():
        for group in opt.param_groups:
            group["lr"] = lr


@dataclass
class TrainInputs:
    """What the loop hands a trainer besides its params."""

    device: torch.device
    # Families that learn a painting: long side in pixels -> the painting, (3,H,W) in [0,1].
    painting: Callable[[int], Tensor] | None = None
    num_classes: int = 0                  # labelled data
    channels: int = 3                     # of the training images
    image_size: int = 0                   # labelled data: the images' side
    # train.precision / train.channels_last as resolved for the device. The loop runs every step
    # under autocast when bf16; a family that autocasts its forward pass itself says so with these.
    bf16: bool = False
    channels_last: bool = False


class Trainer:
    """One training run of a family. Subclasses set `loss_names` and fill `nets` (what train_step
    calls, which the loop may wrap in DistributedDataParallel), `extra` (modules with state that
    are not trained by gradients, e.g. an EMA copy) and `opts` in __init__."""

    loss_names: tuple[str, ...] = ("total",)

    def __init__(self) -> None:
        self.nets: dict[str, nn.Module] = {}
        self.extra: dict[str, nn.Module] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self.step = 0  # the number of steps done before this one; set by the loop

    def modules(self) -> dict[str, nn.Module]:
        """Every module with state, unwrapped: what a checkpoint holds."""
        unwrapped = {k: getattr(m, "module", m) for k, m in self.nets.items()}
        return {**unwrapped, **self.extra}

    def wrap(self, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap every trained network (DDP averages their gradients across processes)."""
        self.nets = {k: wrapper(m) if any(p.requires_grad for p in m.parameters()) else m
                     for k, m in self.nets.items()}

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One optimisation step on a batch ({"image": (N,C,H,W) in [0,1], "label": (N,)} on the
        device); returns the detached 0-d losses named in loss_names."""
        raise NotImplementedError

    def inference_network(self) -> nn.Module:
        """What is saved for inference (its state dict becomes model.safetensors)."""
        raise NotImplementedError

    def sidecar(self) -> dict[str, Any]:
        """What `Family.build` needs to rebuild the inference network, beyond the params."""
        return {}


@dataclass(frozen=True)
class Family:
    name: str
    make_trainer: Callable[[Any, TrainInputs], Trainer]   # (its TrainParams, inputs) -> Trainer
    build: Callable[[dict], nn.Module]                    # sidecar -> inference network (no weights)
    # Shared files it runs besides its own folder (models/<name>/): part of the checkpoint's code
    # hash, so an edit refuses a stale resume.
    shared_code: tuple[str, ...] = field(default=())

    def code_files(self, root: Path) -> list[Path]:
        own = sorted((root / "models" / self.name).glob("*.py"))
        return own + [root / f for f in ("models/family.py", *self.shared_code)]


def seeded_noise(seeds: list[int], dim: int, truncation: float | None = None, categories: int = 0) -> Tensor:
    """One N(0, I) vector per seed, each from its own CPU generator: a sample never depends on
    the batch it is drawn in. truncation t (the "truncation trick", Brock et al. 2019, BigGAN):
    every entry with |z| > t is redrawn from the same generator until it is within t, so the
    noise is a truncated normal, still a pure function of the seed. categories k > 0: a uniform
    code in [0, k) is drawn next from the same generator and appended one-hot (dim + k values)."""
    if truncation is not None and truncation <= 0:
        raise ValueError(f"truncation must be > 0, got {truncation}")
    rows = []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s))
        z = torch.randn(dim, generator=gen)
        if truncation is not None:
            outside = z.abs() > truncation
            while outside.any():
                z[outside] = torch.randn(int(outside.sum()), generator=gen)
                outside = z.abs() > truncation
        if categories:
            code = torch.randint(categories, (), generator=gen)
            z = torch.cat([z, torch.nn.functional.one_hot(code, categories).to(z.dtype)])
        rows.append(z)
    return torch.stack(rows)
