"""Settings of the dcgan family (params.yaml `models.<name>.train` / `.infer`)."""
from __future__ import annotations

from pydantic import Field

from models.gan_params import GANTrainParams
from models.gan_params import SampleInferParams as InferParams  # noqa: F401 (the family's infer settings)


class TrainParams(GANTrainParams):
    # One extra 3x3 layer at the base resolution in G and D: about the same confident fraction per
    # minute as without, but better class balance and Fréchet distance (MNIST, 1 CPU thread).
    g_extra_layers: int = Field(default=1, ge=0, le=8)
    d_extra_layers: int = Field(default=1, ge=0, le=8)
    # InfoGAN's categorical code (Chen et al. 2016), no labels used: G also takes a one-hot code of
    # latent_categories values, drawn uniformly, and a head on D's features must recover it from
    # the fake (cross-entropy, info_weight, added to both losses), which makes each value a mode
    # of its own instead of noise that blends two (0: off).
    latent_categories: int = Field(default=0, ge=0, le=1024)
    info_weight: float = Field(default=1.0, ge=0)
