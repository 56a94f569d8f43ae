"""Settings of the vae family (params.yaml `models.<name>.train` / `.infer`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.gan_params import SampleInferParams as InferParams  # noqa: F401 (the family's infer settings)
from stylepipe.config import TrainBase


class TrainParams(TrainBase):
    steps: int = Field(default=4000, ge=0, le=10_000_000)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    image_size: Literal[28, 32, 64] = 28
    zdim: int = Field(default=16, ge=1, le=4096)        # latent dimensions
    width: int = Field(default=32, ge=1, le=1024)       # first conv's channels (doubling per stride)
    hidden: int = Field(default=256, ge=1, le=65_536)   # the MLP between convs and latent
    lr: float = Field(default=1e-3, gt=0)
    kl_warmup_steps: int = Field(default=1000, ge=0)    # the KL term's weight rises 0 -> 1 over these
    # Bernoulli likelihood on dynamically binarised images: the held-out ELBO is then a bound on
    # log p(x) in nats, comparable with the binarised-MNIST literature.
    binarize: bool = True
    preview_every: int = Field(default=1000, ge=0)
