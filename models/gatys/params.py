"""Settings of the gatys family. Nothing is trained: `train` only stores the painting (at most
`painting_size` on its long side); `infer` is the optimisation each image gets
(models/gatys/optimize.py's GatysConfig)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from stylepipe.config import MAX_TRAIN_SIDE, Section, TrainBase


class TrainParams(TrainBase):
    steps: int = Field(default=0, ge=0, le=0)          # no training steps: the "model" is the painting
    painting_size: int = Field(default=1024, ge=16, le=4096)


class InferParams(Section):
    sizes: list[Annotated[int, Field(ge=16, le=MAX_TRAIN_SIDE)]] = Field(default_factory=lambda: [256, 512],
                                                                      min_length=1)  # coarse to fine
    steps: int = Field(default=150, ge=1, le=10_000)
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float | None = Field(default=None, gt=0)
    content_weight: float = Field(default=1.0, ge=0)
    style_weight: float = Field(default=100.0, ge=0)
    tv_weight: float = Field(default=20.0, ge=0)
    palette_weight: float = Field(default=1.0, ge=0)   # the painting's colours (optimize.py's GatysConfig)
    encoder: Literal["efficientnet_lite0", "vgg16", "vgg19"] = "efficientnet_lite0"
    style_scale: float = Field(default=1.0, gt=0)
    init: Literal["content", "noise"] = "content"
    seed: int = 0
