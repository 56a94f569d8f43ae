"""How good a translation model (pix2pix, cyclegan) is on held-out data.

Paired (a true counterpart exists for every input): L1, PSNR and SSIM of each output against its
target, beside the identity baseline measured on the same pairs (the input itself as the
prediction: a model that does not beat it has learnt nothing about the target domain). Another
baseline, the same U-Net trained with L1 alone, is a model entry of its own (pix2pix with
`gan_weight: 0`), evaluated the same way.

Unpaired: fd_effnetl0 and kid_effnetl0 (Fréchet and kernel distances in EfficientNet-Lite0
features, tasks/evaluation/distributions.py) of the outputs to the held-out images of the target domain, beside the same
distance of the untranslated inputs and the real-vs-real floor (train vs held-out target images);
cycle error: mean |back(forward(x)) - x| for models that translate both ways. Where the target
folder holds an image of the same name as an input (data with hidden pairs, e.g. two emoji sets),
the paired metrics are reported too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tasks.evaluation import distributions
from tasks.evaluation.metrics import ssim


def load(path: Path) -> np.ndarray:
    """(H, W, 3) float in [0, 1]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 100.0 if mse == 0 else 10.0 * np.log10(1.0 / mse)


def pair_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return {"l1": float(np.mean(np.abs(pred - target))), "psnr": psnr(pred, target), "ssim": ssim(pred, target)}


def paired_metrics(outputs: dict[str, Path], inputs: dict[str, Path], targets: dict[str, Path]) -> dict:
    """Means over the names all three have: the model's scores and the identity baseline's."""
    names = sorted(set(outputs) & set(inputs) & set(targets))
    if not names:
        return {}
    model, identity = [], []
    for n in names:
        target, x = load(targets[n]), load(inputs[n])
        out = load(outputs[n])
        if out.shape != target.shape:  # never for the infer stage's outputs (same size as the input)
            out = np.asarray(Image.fromarray((out * 255).astype(np.uint8)).resize(target.shape[1::-1]),
                             dtype=np.float32) / 255
        model.append(pair_scores(out, target))
        identity.append(pair_scores(x, target))
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    result = {"pairs": len(names)}
    for k in ("l1", "psnr", "ssim"):
        result[k], result[f"identity_{k}"] = mean(model, k), mean(identity, k)
    return result


def as_batch(paths: list[Path], size: int = 64) -> torch.Tensor:
    """Images as (N, 3, size, size) in [0, 1] (the feature extractor resizes again anyway)."""
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def distribution_metrics(outputs: list[Path], inputs: list[Path], target_val: list[Path], target_train: list[Path],
                         extractor, device: torch.device) -> dict:
    feats = lambda paths: distributions.effnet_features(extractor, as_batch(paths), device)  # noqa: E731
    target, out, x = feats(target_val), feats(outputs), feats(inputs)
    result = {"fd_effnetl0": distributions.frechet_distance(out, target),
              "fd_effnetl0_inputs": distributions.frechet_distance(x, target),
              "kid_effnetl0": distributions.kernel_distance(out, target),
              "kid_effnetl0_inputs": distributions.kernel_distance(x, target)}
    if target_train:
        n = min(len(target_train), max(len(outputs), len(target_val)))
        floor = feats(sorted(target_train)[:n])
        result["floor_fd_effnetl0"] = distributions.frechet_distance(floor, target)
        result["floor_kid_effnetl0"] = distributions.kernel_distance(floor, target)
    return result


@torch.no_grad()
def cycle_error(net, inputs: list[Path], direction: str, device: torch.device) -> float | None:
    """Mean |back(forward(x)) - x| over the inputs, for a model that translates both ways."""
    back = "b2a" if direction == "a2b" else "a2b"
    if back not in getattr(net, "directions", ()):
        return None
    errors = []
    for p in inputs:
        x = torch.from_numpy(load(p)).permute(2, 0, 1)[None].to(device)
        y = net.set_direction(direction)(x)
        errors.append(float((net.set_direction(back)(y) - x).abs().mean()))
    net.set_direction(direction)
    return float(np.mean(errors))


def write_grid(rows: list[tuple[Path, Path, Path | None]], out: Path, size: int = 64) -> Path:
    """One row per example: input | output | target (grey when there is none)."""
    gap = 2
    grid = Image.new("RGB", (3 * size + 4 * gap, len(rows) * (size + gap) + gap), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, path in enumerate(row):
            tile = Image.open(path).convert("RGB").resize((size, size), Image.NEAREST) if path else \
                Image.new("RGB", (size, size), (128, 128, 128))
            grid.paste(tile, (gap + j * (size + gap), gap + i * (size + gap)))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
