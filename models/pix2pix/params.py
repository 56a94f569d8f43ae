"""Settings of the pix2pix family (params.yaml `models.<name>.train` / `.infer`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.translation_params import TranslateInferParams as InferParams  # noqa: F401 (the family's infer settings)
from models.translation_params import TranslationTrainParams


class TrainParams(TranslationTrainParams):
    # U-Net depth: the input is halved this many times (6: a 64-px crop down to 1x1, 8 for 256 px).
    num_downs: int = Field(default=6, ge=2, le=9)
    norm: Literal["batch", "instance"] = "batch"
    dropout: bool = True            # in the inner decoder blocks: the paper's noise (off at inference)
    l1_weight: float = Field(default=100.0, ge=0)   # lambda of the L1 term
    gan_weight: float = Field(default=1.0, ge=0)    # 0: the same U-Net trained with L1 alone (a baseline)
    gan_loss: Literal["bce", "lsgan"] = "bce"
    # pix2pixHD's feature matching: L1 between D's features of (A, G(A)) and (A, B), this weight
    fm_weight: float = Field(default=0.0, ge=0)
