"""Settings shared by the generator families, torch-free (params.yaml is validated without torch):
the GAN training settings (dcgan, cgan) and the sampling settings of every generator."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stylepipe.config import Section, TrainBase


class GANTrainParams(TrainBase):
    steps: int = Field(default=6000, ge=0, le=10_000_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    image_size: Literal[28, 32, 64] = 28        # the dataset's images are resized to this
    nz: int = Field(default=64, ge=1, le=4096)  # noise dimensions
    ngf: int = Field(default=64, ge=1, le=1024)  # generator width
    ndf: int = Field(default=64, ge=1, le=1024)  # discriminator width
    loss: Literal["bce", "hinge"] = "bce"
    spectral_norm: bool = False                 # on D's convolutions
    lr_g: float = Field(default=2e-4, gt=0)
    lr_d: float = Field(default=2e-4, gt=0)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    # The last decay_fraction of the steps lower both learning rates linearly towards 0 (0: constant).
    decay_fraction: float = Field(default=0.0, ge=0, le=1)
    # R1 (Mescheder et al. 2018): gamma/2 * |grad_x D(x)|^2 on real images, every r1_every D steps
    # (scaled by r1_every, StyleGAN2's lazy form). 0: off.
    r1_gamma: float = Field(default=0.0, ge=0)
    r1_every: int = Field(default=4, ge=1)
    # Top-k training (Sinha et al. 2020): G learns only from the fakes D rates most real; the kept
    # fraction falls linearly from 1 at step 0 to g_topk at half the steps (1: every fake).
    g_topk: float = Field(default=1.0, gt=0, le=1)
    ema_decay: float = Field(default=0.999, ge=0, lt=1)  # the EMA copy of G is what is saved
    # Recompute the EMA generator's BatchNorm statistics for its own weights before it is saved
    # or previewed (it otherwise carries the live G's).
    ema_bn_recalibrate: bool = True
    g_extra_layers: int = Field(default=0, ge=0, le=8)   # 3x3 conv blocks at G's base resolution
    d_extra_layers: int = Field(default=0, ge=0, le=8)   # 3x3 conv layers at D's last resolution
    preview_every: int = Field(default=1000, ge=0)       # fixed-noise sample grid every N steps (0: never)

    @model_validator(mode="after")
    def _r1_runs_uncompiled(self):
        if self.r1_gamma and self.compile:  # refused here, not at the first R1 step
            raise ValueError("r1_gamma needs compile: false (torch.compile's autograd has no double backward)")
        return self


class SampleInferParams(Section):
    count: int = Field(default=100, ge=0, le=100_000_000)  # samples the infer stage writes
    seed: int = Field(default=0, ge=0)                     # the first sample's seed
    labels: list[int] = Field(default_factory=list)        # conditional models: [] = every class
    # GAN families (dcgan, cgan) only: the truncation trick (Brock et al. 2019): noise entries with
    # |z| > truncation are redrawn (models/family.py seeded_noise). null: plain N(0, I) noise. Off by
    # default: on MNIST's dcgan it lowers the judge's confident fraction (docs/generation.md). The
    # infer stage, evaluate and `stylepipe sample --truncation` use it.
    truncation: float | None = Field(default=None, gt=0)
