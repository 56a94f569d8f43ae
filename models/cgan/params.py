"""Settings of the cgan family: the dcgan settings plus how D sees the label."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.gan_params import GANTrainParams
from models.gan_params import SampleInferParams as InferParams  # noqa: F401 (the family's infer settings)


class TrainParams(GANTrainParams):
    # Projection D with BCE and BatchNorm: 97% judge label accuracy on MNIST in 11 minutes of one
    # CPU thread; hinge + spectral norm lost classes (9 of 10 present after 6 minutes).
    cond: Literal["projection", "concat"] = "projection"   # D: projection (Miyato & Koyama 2018) or one-hot maps
    emb_dim: int = Field(default=16, ge=1, le=1024)        # G's label embedding
