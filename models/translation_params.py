"""Settings shared by the translation families (pix2pix, cyclegan), torch-free (params.yaml is
validated without torch)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from stylepipe.config import Section, TrainBase


class TranslationTrainParams(TrainBase):
    steps: int = Field(default=4000, ge=0, le=10_000_000)
    batch_size: int = Field(default=8, ge=1, le=65_536)
    # Training crops: each pair (or image) is resized to load_size, then a random image_size crop
    # (+ a flip, the same for both halves of a pair) is taken ("jitter" in the papers).
    image_size: int = Field(default=64, ge=16, le=1024)
    load_size: int | None = Field(default=None, ge=16, le=2048)  # None: image_size * 9/8
    flip: bool = True
    ngf: int = Field(default=32, ge=1, le=1024)     # generator width
    ndf: int = Field(default=32, ge=1, le=1024)     # discriminator width
    d_layers: int = Field(default=3, ge=1, le=6)    # PatchGAN stride-2 layers (3: 70x70 receptive field)
    # G's 2x upsampling: the papers' transposed convs, or resize (nearest 2x + 3x3 conv), which
    # avoids their checkerboard texture
    upsample: Literal["transpose", "resize"] = "transpose"
    # G outputs its input plus a learned change (no tanh; its last conv starts at zero, so G starts
    # as the identity): for domains that share their layout, training starts from "change nothing"
    residual: bool = False
    lr: float = Field(default=2e-4, gt=0)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    # The learning rate falls linearly from lr to 0 over the last decay_fraction of the steps.
    decay_fraction: float = Field(default=0.5, ge=0, le=1)

    @property
    def crop_load_size(self) -> int:
        return self.load_size or self.image_size * 9 // 8


class TranslateInferParams(Section):
    direction: Literal["a2b", "b2a"] = "a2b"   # the infer stage translates val/A (a2b) or val/B (b2a)
