"""Settings of the johnson family (params.yaml `models.<name>.train` / `.infer`)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from stylepipe.config import Section, TrainBase

# Training budgets (issue 15; README has each one's measured time). A preset fills in what the
# model's `train:` does not set itself. quick: the default run's CPU budget; standard: an evening
# on a 2-core CPU; full: the published models' budget (pytorch/examples: 2 epochs of COCO, about
# 40k steps of 4 images at 256 px), for a GPU or a long CPU night.
PRESETS = {
    "quick": {"steps": 400, "image_size": 192},
    "standard": {"steps": 2000, "image_size": 192},
    "full": {"steps": 40_000, "image_size": 256},
}

# Recipes: a bundle of loss and network settings, filled in (as a preset's) where the model's
# `train:` does not set them; the budget stays the preset's (the recipe was measured at standard).
# forms: the settings under which the published models' four paintings showed some of their larger
# forms (candy's pods, mosaic's lead lines) with the photos readable: Johnson's classic network with
# a stride-32 style layer, bilinear upsampling against its 4-px mesh, the output gradient floor
# against blown-out regions and twice the content weight against flat saturated ones, which also
# costs some of the forms. On udnie it left flat black regions (style_layer_weights helps there).
# docs/style-quality.md, sections 13-18 and 24. Its layer names are efficientnet_lite0's.
RECIPES = {
    "forms": {
        "network": "classic",
        "upsample": "bilinear",
        "style_layers": ["stem", "block1.expand", "block3.expand", "block5.expand", "block8.expand", "block15.expand"],
        "output_gradient_floor": 0.01,
        "content_weight": 6.0,
    },
}

# Adam's learning rate where the model's `train:` sets none. At the fast network's 2e-3 the classic
# network drove 2-11% of its pixels into flat regions pinned at black or white; at 1e-3,
# pytorch/examples' rate for it, far fewer (docs/style-quality.md, section 15).
DEFAULT_LR = {"fast": 2e-3, "slim": 2e-3, "classic": 1e-3}


class TrainParams(TrainBase):
    preset: Literal["quick", "standard", "full"] = "quick"
    recipe: Literal["forms"] | None = None  # RECIPES; None: each setting's own default
    steps: int = Field(default=400, ge=1, le=10_000_000)
    # fast: cut for CPUs; slim: fast with its two costliest convs made cheaper (1.33x its speed
    # through onnxruntime; docs/style-quality.md, section 10); classic: Johnson et al.'s network.
    network: Literal["fast", "slim", "classic"] = "fast"
    # The decoder's x2 upsamplings. None: the network's default (fast, slim: bilinear resize-conv;
    # classic: nearest, as Johnson's). pixelshuffle: the fast network before issue 15 (a 4-px grid;
    # not for slim).
    upsample: Literal["antialiased", "bilinear", "nearest", "pixelshuffle"] | None = None
    encoder: Literal["efficientnet_lite0", "vgg16", "vgg19"] = "efficientnet_lite0"
    image_size: int = Field(default=192, ge=32, le=4096)     # random crops of the training photos
    # Long side the style image is resized to: sets the scale of the brush texture it teaches.
    style_size: int = Field(default=256, ge=32, le=4096)
    lr: float = Field(default=2e-3, gt=0)   # unset: DEFAULT_LR of the network
    content_weight: float = Field(default=3.0, gt=0)
    style_weight: float = Field(default=200.0, gt=0)  # with statistic gram, 100 weighs about the same
    tv_weight: float = Field(default=20.0, ge=0)
    # What the style loss matches per layer: gram (Gram matrices, Johnson et al.), meanstd (channel
    # means and deviations, as AdaIN), swd (the whole feature distribution: sliced Wasserstein).
    statistic: Literal["gram", "meanstd", "swd"] = "swd"
    # > 0: the output's colour distribution is matched to the painting's too (models/losses.py).
    palette_weight: float = Field(default=1.0, ge=0)
    # > 0: the output sigmoid's gradient is at least this during training, so that pixels saturated
    # to white or black can come back (docs/style-quality.md, section 14). Outputs are unchanged.
    output_gradient_floor: float = Field(default=0.0, ge=0, lt=0.25)
    # Empty: the encoder's default layer set (models/encoders.py).
    style_layers: list[str] = Field(default_factory=list)
    # A style layer's term times this (1 where not named; e.g. {block15.expand: 0.5}): how hard the
    # deep layers pull towards the painting's large forms against the fine texture. Names must be
    # among the style layers in use.
    style_layer_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    content_layers: list[str] = Field(default_factory=list)

    @field_validator("upsample")
    @classmethod
    def _slim_has_no_pixelshuffle(cls, upsample: str | None, info: ValidationInfo) -> str | None:
        if upsample == "pixelshuffle" and info.data.get("network") == "slim":  # network.py refuses it too
            raise ValueError("'pixelshuffle' is the fast network's old decoder; slim takes bilinear, antialiased "
                             "or nearest")
        return upsample

    @model_validator(mode="after")
    def _apply_defaults(self) -> TrainParams:
        # The recipe's and the preset's values, then the network's learning rate, only where not
        # given; left out of model_fields_set, so that model_dump(exclude_unset=True) followed by
        # another preset, recipe or network gets that one's values.
        if self.recipe and self.encoder != "efficientnet_lite0" and "style_layers" not in self.model_fields_set:
            raise ValueError(f"recipe {self.recipe!r} names efficientnet_lite0's style layers; with encoder "
                             f"{self.encoder!r} set train.style_layers too")

        def fill(values: dict) -> None:
            for key, value in values.items():
                if key not in self.model_fields_set:  # frozen model: set once, at validation
                    object.__setattr__(self, key, list(value) if isinstance(value, list) else value)

        fill(RECIPES.get(self.recipe, {}))
        fill(PRESETS[self.preset])
        fill({"lr": DEFAULT_LR[self.network]})  # (after the recipe, which may set the network)
        return self


class InferParams(Section):
    """Nothing of its own: the infer stage runs the bulk engine with params.yaml's `stylize`."""
