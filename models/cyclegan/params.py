"""Settings of the cyclegan family (params.yaml `models.<name>.train` / `.infer`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.translation_params import TranslateInferParams as InferParams  # noqa: F401 (the family's infer settings)
from models.translation_params import TranslationTrainParams


class TrainParams(TranslationTrainParams):
    batch_size: int = Field(default=4, ge=1, le=65_536)
    n_blocks: int = Field(default=6, ge=0, le=32)   # residual blocks (the paper: 6 at 128 px, 9 at 256)
    norm: Literal["batch", "instance"] = "instance"
    gan_loss: Literal["lsgan", "bce"] = "lsgan"
    cycle_weight: float = Field(default=10.0, ge=0)     # lambda_A = lambda_B
    identity_weight: float = Field(default=0.5, ge=0)   # times cycle_weight: G_A(B) ~ B, G_B(A) ~ A
    pool_size: int = Field(default=50, ge=0, le=10_000)  # history of fakes D sees (0: none)
