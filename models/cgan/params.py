"""Settings of the cgan family: the dcgan settings plus how D sees the label."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.dcgan.params import GANTrainParams, InferParams  # noqa: F401 (the same infer settings)


class TrainParams(GANTrainParams):
    loss: Literal["bce", "hinge"] = "hinge"
    spectral_norm: bool = True
    cond: Literal["projection", "concat"] = "projection"   # D: projection (Miyato & Koyama 2018) or one-hot maps
    emb_dim: int = Field(default=16, ge=1, le=1024)        # G's label embedding
