"""Perceptual losses (Johnson et al. 2016) over a frozen encoder's features."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gram_matrix(features: Tensor) -> Tensor:
    """(N,C,H,W) -> (N,C,C), normalised by C*H*W."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def mean_std(features: Tensor, eps: float = 1e-5) -> Tensor:
    """(N,C,H,W) -> (N,2C): per-channel mean and standard deviation (Huang & Belongie 2017)."""
    mean = features.mean(dim=(2, 3))
    std = (features.var(dim=(2, 3), unbiased=False) + eps).sqrt()
    return torch.cat([mean, std], dim=1)


def sliced_wasserstein(features: Tensor, target: Tensor, directions: int = 32, samples: int = 4096) -> Tensor:
    """Squared sliced Wasserstein-2 distance between the feature vectors of each image in
    `features` (N,C,H,W) and those of `target` (1,C,h,w) (Heitz et al. 2021): both are projected on
    random unit directions, each projection's values sorted, and the sorted lists compared. Unlike a
    Gram matrix it matches the whole distribution of features, not only their second moments.
    New directions and positions are drawn every call: at most `directions` of them and `samples`
    positions per image (sorting is what this costs: all 96 directions at every position of a
    stride-2 layer made a training step 2.4x slower than with Gram matrices)."""
    c = features.shape[1]
    with torch.autocast(features.device.type, enabled=False):  # sorted bf16 values would be mostly rounding
        features, target = features.float(), target.float()
        dirs = unit_directions(c, directions, features.device)

        def sorted_projections(f: Tensor) -> Tensor:
            f = f.flatten(2)
            if f.shape[-1] > samples:
                f = f[:, :, torch.randperm(f.shape[-1], device=f.device)[:samples]]
            return sorted_projections_on(f, dirs)

        out, ref = sorted_projections(features), sorted_projections(target)
        return ((out - quantiles_at(ref, out.shape[1])) ** 2).mean()


def unit_directions(channels: int, directions: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> Tensor:
    """(channels, min(channels, directions)) random unit vectors: sliced_wasserstein's projections.
    A seeded generator gives the same ones every time (Gatys' palette term: L-BFGS needs one objective)."""
    dirs = torch.randn(channels, min(channels, directions), device=device, generator=generator)  # pixels: 3
    return dirs / dirs.norm(dim=0, keepdim=True)


def sorted_projections_on(features: Tensor, dirs: Tensor) -> Tensor:
    """(N,C,H,W) or (N,C,positions) features projected on (C,D) directions, each projection sorted:
    (N, positions, D)."""
    return (features.flatten(2).transpose(1, 2) @ dirs).sort(dim=1).values


def quantiles_at(sorted_values: Tensor, count: int) -> Tensor:
    """(N, n, D) sorted values -> (N, count, D): the same distribution at another sample count."""
    if sorted_values.shape[1] == count:
        return sorted_values
    return F.interpolate(sorted_values.transpose(1, 2), size=count, mode="nearest").transpose(1, 2)


# Per layer, what the style loss compares: for "swd" the painting's features themselves.
STATISTICS = {"gram": gram_matrix, "meanstd": mean_std, "swd": lambda features: features}


def content_loss(out_feats: Mapping[str, Tensor], content_feats: Mapping[str, Tensor],
                 layers: Sequence[str]) -> Tensor:
    """Mean squared feature difference, averaged over layers."""
    return sum(F.mse_loss(out_feats[n], content_feats[n]) for n in layers) / len(layers)


def style_loss(out_feats: Mapping[str, Tensor], target_stats: Mapping[str, Tensor],
               layers: Sequence[str], statistic: str = "gram",
               layer_weights: Mapping[str, float] | None = None) -> Tensor:
    """Squared distance of the output's statistics to the painting's, per layer divided by the
    painting's own mean squared statistic: the raw per-layer magnitudes differ by orders of
    magnitude across layers (and encoders), so without it one layer dominates and the style weight
    would not transfer between encoders. target_stats[n]: (1, ...) from the style image.
    layer_weights multiplies a layer's term (1 where not named); the sum is still divided by the
    number of layers, so lowering one layer's weight leaves the others' pull as it was."""
    layer_weights = layer_weights or {}
    stat = STATISTICS[statistic]
    total = 0.0
    for n in layers:
        target = target_stats[n]
        if statistic == "swd":
            distance = sliced_wasserstein(out_feats[n], target)
        else:
            distance = ((stat(out_feats[n]) - target) ** 2).mean()
        total = total + layer_weights.get(n, 1.0) * distance / (target**2).mean().clamp_min(1e-12)
    return total / len(layers)


def total_variation(images: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring pixels (anisotropic TV, L1)."""
    zero = images.new_zeros(())
    # a side of 1 px has no neighbours along it (the mean of nothing would be NaN)
    dh = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean() if images.shape[2] > 1 else zero
    dw = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean() if images.shape[3] > 1 else zero
    return dh + dw


class PerceptualLoss(nn.Module):
    """Weighted content + style + total-variation loss for a fixed style image.

    The encoder must have been built with (at least) style_layers + content_layers. palette_weight > 0
    adds the pixels' colour distribution, matched to the painting's by the sliced Wasserstein distance
    in RGB: the painting's palette, whatever the encoder sees. It is added to the style loss, which
    is the mean over the layers, so palette_weight 1 weighs as much as all the layers together."""

    def __init__(self, encoder: nn.Module, style_image: Tensor, style_layers: Sequence[str],
                 content_layers: Sequence[str], content_weight: float, style_weight: float,
                 tv_weight: float, statistic: str = "gram", palette_weight: float = 0.0,
                 style_layer_weights: Mapping[str, float] | None = None):
        super().__init__()
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}")
        self.encoder = encoder
        self.style_layers = list(style_layers)
        self.content_layers = list(content_layers)
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        self.statistic = statistic
        self.palette_weight = palette_weight
        self.style_layer_weights = dict(style_layer_weights or {})
        if style_image.dim() == 3:
            style_image = style_image[None]
        self.palette = style_image.float()
        with torch.no_grad():
            feats = encoder(style_image)
            stats = {n: STATISTICS[statistic](feats[n].float()) for n in self.style_layers}
        self.target_stats = stats  # plain tensors: move with .to() below, not saved in state dicts

    def to(self, *args, **kwargs) -> PerceptualLoss:
        super().to(*args, **kwargs)
        self.target_stats = {n: t.to(*args, **kwargs) for n, t in self.target_stats.items()}
        self.palette = self.palette.to(*args, **kwargs)
        return self

    def forward(self, output: Tensor, content: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            content_feats = self.encoder(content)
        out_feats = self.encoder(output)
        out_feats = {n: f.float() for n, f in out_feats.items()}
        content_feats = {n: f.float() for n, f in content_feats.items()}
        c = self.content_weight * content_loss(out_feats, content_feats, self.content_layers)
        s = style_loss(out_feats, self.target_stats, self.style_layers, self.statistic, self.style_layer_weights)
        if self.palette_weight:
            # relative to the painting's own energy, so the term's weight is the same for dark and bright
            # paintings; the floor keeps an all-black painting from dividing by zero
            palette_energy = (self.palette**2).mean().clamp_min(1e-12)
            s = s + self.palette_weight * sliced_wasserstein(output.float(), self.palette) / palette_energy
        s = self.style_weight * s
        tv = self.tv_weight * total_variation(output.float())
        return {"total": c + s + tv, "content": c, "style": s, "tv": tv}
