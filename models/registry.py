"""The model families stylepipe knows, by name, without importing torch.

A family is one subpackage of models/ (models/<name>/): `params.py` declares its training and
inference settings (pydantic, torch-free, so params.yaml is validated and jobs are planned without
torch), and `family.py` holds the rest (networks, training step, runner; see models/family.py for
the contract). This table says what each one is; `load()` imports the heavy part on demand.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from models.family import Family

# What a runner does: "image" maps images to images (stylize, translate), "sample" maps seeds (and
# labels) to new images (generate).
RunnerKind = Literal["image", "sample"]
# What a family trains on: photos (a folder of images), labelled (images with class labels),
# paired / unpaired (two domains; translation families).
DataKind = Literal["photos", "labelled", "paired", "unpaired"]


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    runner: RunnerKind
    data: DataKind
    needs_style: bool      # the model entry names a painting (`style:`), fetched by download
    summary: str

    @property
    def package(self) -> str:
        return f"models.{self.name}"

    @property
    def translates(self) -> bool:
        """Runs in a direction between two domains (pix2pix, cyclegan)."""
        return self.data in ("paired", "unpaired")


FAMILIES: dict[str, FamilyInfo] = {f.name: f for f in (
    FamilyInfo("johnson", "image", "photos", True, "feed-forward style network for one painting (Johnson et al. 2016)"),
    FamilyInfo("gatys", "image", "photos", True, "style transfer by optimising each image's pixels (Gatys et al. 2016)"),
    FamilyInfo("adain", "image", "photos", False, "arbitrary style transfer: any painting at run time (Huang & Belongie 2017)"),
    FamilyInfo("dcgan", "sample", "labelled", False, "unconditional GAN (Radford et al. 2016)"),
    FamilyInfo("cgan", "sample", "labelled", False, "class-conditional GAN, projection discriminator"),
    FamilyInfo("vae", "sample", "labelled", False, "convolutional variational autoencoder (Kingma & Welling 2014)"),
    FamilyInfo("pix2pix", "image", "paired", False, "paired translation A -> B: U-Net + PatchGAN, L1 + GAN (Isola et al. 2017)"),
    FamilyInfo("cyclegan", "image", "unpaired", False, "unpaired translation both ways: ResNet G, PatchGAN, cycle loss (Zhu et al. 2017)"),
)}


def info(name: str) -> FamilyInfo:
    if isinstance(name, str) and name in FAMILIES:  # (a sidecar's "family" may be any JSON value)
        return FAMILIES[name]
    raise KeyError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")


def params_module(name: str):
    """models/<name>/params.py: TrainParams and InferParams of the family (torch-free)."""
    return importlib.import_module(f"{info(name).package}.params")


def validate_params(name: str, train: dict[str, Any], infer: dict[str, Any]):
    """(TrainParams, InferParams) of family `name`, validated (pydantic raises on bad values)."""
    module = params_module(name)
    return module.TrainParams.model_validate(train), module.InferParams.model_validate(infer)


def load(name: str) -> Family:
    """The family itself (imports torch and its networks)."""
    return importlib.import_module(f"{info(name).package}.family").FAMILY
