"""Settings of the johnson family (params.yaml `models.<name>.train` / `.infer`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from stylepipe.config import Section, TrainBase


class TrainParams(TrainBase):
    steps: int = Field(default=400, ge=1, le=10_000_000)
    network: Literal["fast", "classic"] = "fast"
    # The decoder's x2 upsamplings. None: the network's default (fast: bilinear resize-conv;
    # classic: nearest, as Johnson's). pixelshuffle: the fast network before issue 15 (a 4-px grid).
    upsample: Literal["bilinear", "nearest", "pixelshuffle"] | None = None
    encoder: Literal["efficientnet_lite0", "vgg16", "vgg19"] = "efficientnet_lite0"
    image_size: int = Field(default=192, ge=32, le=4096)     # random crops of the training photos
    # Long side the style image is resized to: sets the scale of the brush texture it teaches.
    style_size: int = Field(default=256, ge=32, le=4096)
    lr: float = Field(default=2e-3, gt=0)
    content_weight: float = Field(default=3.0, gt=0)
    style_weight: float = Field(default=100.0, gt=0)
    tv_weight: float = Field(default=20.0, ge=0)
    # Empty: the encoder's default layer set (models/encoders.py).
    style_layers: list[str] = Field(default_factory=list)
    content_layers: list[str] = Field(default_factory=list)


class InferParams(Section):
    """Nothing of its own: the infer stage runs the bulk engine with params.yaml's `stylize`."""
