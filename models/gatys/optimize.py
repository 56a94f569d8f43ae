"""Style transfer by optimisation (Gatys, Ecker & Bethge 2016): no trained network; the pixels of
one image are optimised until its features match a photo's (content) and its feature statistics
match a painting's (style). Seconds to minutes per image where a trained feed-forward network
takes milliseconds, but any painting works at once, with no training run.

    result = gatys(content, style, GatysConfig(sizes=(256, 512)))
    result.image      # (1,3,H,W) in [0,1], on the CPU; H x W has the long side sizes[-1]
    result.levels     # per level: size, seconds, losses per evaluation, final losses

Read top to bottom: the settings; resizing; the objective (models/losses.py's content, style and
total-variation losses over a frozen models/encoders.py encoder); one level of optimisation; the
coarse-to-fine driver.

Pixels are optimised directly and projected back onto [0,1] (clamped in place) after every Adam
step and every LBFGS_CHUNK L-BFGS iterations. A sigmoid parametrisation was tried and rejected:
its gradient vanishes at 0 and 1, so the saturated whites and blacks of a content-initialised
image hardly move (measured: a pure-white sky stayed white, mean 0.99, where projection painted it,
mean 0.89). Optimising without any bound left 4% of the pixels outside [0,1].
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from models.encoders import ENCODERS, Encoder, build_encoder, check_layers, default_layers
from models.losses import (content_loss, gram_matrix, quantiles_at, sorted_projections_on, style_loss,
                           total_variation, unit_directions)
from stylepipe.devices import pick_device
from stylepipe.errors import StageError

# Content layer per encoder. Deeper than feed-forward training's (block3.expand, stride 4): the
# optimisation starts from the photo itself, so a stride-8 layer keeps its structure while leaving
# the texture free (docs/architecture.md, "Gatys mode", has the comparison).
CONTENT_LAYERS = {"efficientnet_lite0": ("block5.expand",), "vgg16": ("relu3_3",), "vgg19": ("relu4_2",)}
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
MIN_SIZE, MAX_SIZE = 16, 4096  # long side of a level, in pixels
LBFGS_CHUNK = 20               # L-BFGS iterations between two projections onto [0,1]
LBFGS_HISTORY = 50


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class GatysConfig:
    sizes: tuple[int, ...] = (512,)   # long side of each level, coarse to fine; the last is the output's
    steps: int = 150                  # per level: L-BFGS loss evaluations, or Adam steps
    optimizer: str = "lbfgs"          # lbfgs | adam
    lr: float | None = None           # None: 1 for L-BFGS (its line search scales the step), 0.02 for Adam
    content_weight: float = 1.0
    style_weight: float = 100.0
    tv_weight: float = 20.0
    # > 0: the pixels' colour distribution is matched to the painting's too (sliced Wasserstein in
    # RGB, as feed-forward training's palette term); added to the style loss before style_weight
    palette_weight: float = 1.0
    encoder: str = "efficientnet_lite0"
    style_layers: tuple[str, ...] = ()    # () : the encoder's default style layers
    content_layers: tuple[str, ...] = ()  # () : CONTENT_LAYERS[encoder]
    style_scale: float = 1.0          # painting's long side = style_scale x the level's long side
    init: str = "content"             # content | noise (uniform noise from `seed`)
    seed: int = 0

    def __post_init__(self):
        # tuples, also when the values come back from JSON as lists (a Prefect flow's parameters)
        for name in ("sizes", "style_layers", "content_layers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.sizes:
            raise StageError("no sizes given")
        for s in self.sizes:
            if isinstance(s, bool) or not isinstance(s, int) or not MIN_SIZE <= s <= MAX_SIZE:
                raise StageError(f"size {s!r} must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}")
        if list(self.sizes) != sorted(set(self.sizes)):
            raise StageError(f"coarse-to-fine sizes must increase: {','.join(map(str, self.sizes))}")
        if self.steps < 1:
            raise StageError(f"steps must be at least 1 (got {self.steps})")
        if self.optimizer not in OPTIMIZERS:
            raise StageError(f"optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise StageError(f"init {self.init!r}; expected one of {', '.join(INITS)}")
        if self.encoder not in ENCODERS:
            raise StageError(f"encoder {self.encoder!r}; expected one of {', '.join(ENCODERS)}")
        for name in ("content_weight", "style_weight", "tv_weight", "palette_weight"):
            if not getattr(self, name) >= 0:
                raise StageError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.lr is not None and not self.lr > 0:
            raise StageError(f"lr must be > 0 (got {self.lr})")
        if not self.style_scale > 0:
            raise StageError(f"style_scale must be > 0 (got {self.style_scale})")

    def layers(self) -> tuple[list[str], list[str]]:
        """(style layers, content layers), defaults filled in and checked against the encoder."""
        style = list(self.style_layers) or default_layers(self.encoder)[0]
        content = list(self.content_layers) or list(CONTENT_LAYERS[self.encoder])
        check_layers(self.encoder, style, "style layer")
        check_layers(self.encoder, content, "content layer")
        return style, content


def build_gatys_encoder(config: GatysConfig, device: torch.device | str = "cpu") -> Encoder:
    style, content = config.layers()
    return build_encoder(config.encoder, style + content).to(device)


# ---------------------------------------------------------------------------------- resizing


def shape_for(height: int, width: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: Tensor, shape: tuple[int, int]) -> Tensor:
    """(N,3,H,W) in [0,1] -> (N,3,*shape); bicubic, antialiased when shrinking."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image
    return F.interpolate(image, size=shape, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def resize_long_side(image: Tensor, long_side: int) -> Tensor:
    return resize(image, shape_for(*image.shape[-2:], long_side))


# ---------------------------------------------------------------------------------- objective


class Objective:
    """Weighted content + style + TV loss of an image against one content image (the photo at this
    level's size) and one painting; both are encoded once, here."""

    def __init__(self, encoder: Encoder, content: Tensor, style: Tensor, config: GatysConfig):
        self.encoder, self.config = encoder, config
        self.style_layers, self.content_layers = config.layers()
        with torch.no_grad():
            feats = encoder(content)
            self.content_feats = {n: feats[n] for n in self.content_layers}
            feats = encoder(style)
            self.style_stats = {n: gram_matrix(feats[n]) for n in self.style_layers}
            if config.palette_weight:
                # fixed directions (L-BFGS needs one objective), every pixel; the painting's side once
                # drawn on the CPU: the same directions for a seed on any device
                seeded = torch.Generator().manual_seed(config.seed)
                self.directions = unit_directions(3, 3, generator=seeded).to(style.device)
                painting = sorted_projections_on(style, self.directions)
                self.palette = quantiles_at(painting, content.shape[2] * content.shape[3])
                self.palette_scale = (style**2).mean().clamp_min(1e-12)  # a black painting

    def palette_distance(self, image: Tensor) -> Tensor:
        """Squared sliced Wasserstein distance of the image's pixels to the painting's, over the
        painting's mean square (as feed-forward training's palette term, models/losses.py)."""
        out = sorted_projections_on(image, self.directions)
        return ((out - quantiles_at(self.palette, out.shape[1])) ** 2).mean() / self.palette_scale

    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        c = self.config
        feats = self.encoder(image)
        content = c.content_weight * content_loss(feats, self.content_feats, self.content_layers)
        style = style_loss(feats, self.style_stats, self.style_layers)
        if c.palette_weight:
            style = style + c.palette_weight * self.palette_distance(image)
        style = c.style_weight * style
        tv = c.tv_weight * total_variation(image)
        return {"total": content + style + tv, "content": content, "style": style, "tv": tv}


# ---------------------------------------------------------------------------------- one level


def optimise(init: Tensor, objective: Objective, config: GatysConfig) -> tuple[Tensor, list[dict[str, float]]]:
    """Optimise the pixels from `init`; returns the image in [0,1] and the losses of every
    evaluation. L-BFGS runs in chunks of LBFGS_CHUNK iterations, clamping between chunks (its
    curvature history carries over); its last line search may add a few evaluations to `steps`."""
    # contiguous: L-BFGS flattens the gradient with view(-1), and a gradient takes its parameter's
    # strides (a photo decoded as HWC and permuted is not contiguous)
    x = init.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    lr = config.lr or DEFAULT_LR[config.optimizer]
    history: list[dict[str, float]] = []

    def evaluate() -> Tensor:
        losses = objective(x)
        history.append({k: v.item() for k, v in losses.items()})
        return losses["total"]

    if config.optimizer == "adam":
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(config.steps):
            opt.zero_grad(set_to_none=True)
            evaluate().backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        return x.detach(), history

    opt = torch.optim.LBFGS([x], lr=lr, max_iter=LBFGS_CHUNK, history_size=LBFGS_HISTORY,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = evaluate()
        loss.backward()
        return loss

    while len(history) < config.steps:
        before = len(history)
        opt.param_groups[0]["max_eval"] = config.steps - before
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0, 1)
        if len(history) - before <= 1:  # converged: the gradient (or the loss change) is ~0
            break
    return x.detach(), history


# ---------------------------------------------------------------------------------- coarse to fine


@dataclass
class Level:
    size: int                         # long side
    shape: tuple[int, int]            # (H, W)
    seconds: float
    history: list[dict[str, float]]   # losses of every evaluation (total, content, style, tv)
    final: dict[str, float] = field(default_factory=dict)  # losses of the level's result

    @property
    def evaluations(self) -> int:
        return len(self.history)


@dataclass
class GatysResult:
    image: Tensor                     # (1,3,H,W) in [0,1], CPU
    levels: list[Level]


def gatys(content: Tensor, style: Tensor, config: GatysConfig = GatysConfig(), *,
          encoder: Encoder | None = None, device: torch.device | str | None = None,
          on_level: Callable[[int, Level], None] | None = None) -> GatysResult:
    """Stylize `content` ((3,H,W) or (1,3,H,W) in [0,1], any size) after `style` (same, any size).

    Level i optimises at long side sizes[i], starting from the photo (or noise) at the first level
    and from the previous level's result, upsampled, after that: the coarse levels settle the
    large-scale layout cheaply and the fine ones only refine. The painting is resized at every
    level to style_scale x that level's long side, so brush strokes keep their size relative to the
    picture. Deterministic for a seed on the CPU. Gradients are needed: this works also when
    called under torch.inference_mode() or no_grad()."""
    device = torch.device(device) if device is not None else pick_device("auto")
    if encoder is None:
        encoder = build_gatys_encoder(config, device)
    with torch.inference_mode(False), torch.enable_grad():
        # clone(): an inference tensor (made under inference_mode) cannot take part in autograd;
        # contiguous, as at a level of the photo's own size the photo itself is the init
        content = (content if content.dim() == 4 else content[None]).to(device).float().clone(
            memory_format=torch.contiguous_format)
        style = (style if style.dim() == 4 else style[None]).to(device).float().clone(
            memory_format=torch.contiguous_format)
        image: Tensor | None = None
        levels: list[Level] = []
        for i, size in enumerate(config.sizes):
            started = time.perf_counter()
            shape = shape_for(*content.shape[-2:], size)
            photo = resize(content, shape)
            painting = resize_long_side(style, min(MAX_SIZE, max(MIN_SIZE, round(size * config.style_scale))))
            if image is not None:
                init = resize(image, shape)
            elif config.init == "noise":
                noise = torch.rand((1, 3, *shape), generator=torch.Generator().manual_seed(config.seed))
                init = noise.to(device)
            else:
                init = photo
            objective = Objective(encoder, photo, painting, config)
            image, history = optimise(init, objective, config)
            with torch.no_grad():
                final = {k: v.item() for k, v in objective(image).items()}
            level = Level(size, shape, time.perf_counter() - started, history, final)
            levels.append(level)
            if on_level is not None:
                on_level(i, level)
    return GatysResult(image.cpu(), levels)
