"""Settings of the adain family (params.yaml `models.<name>.train` / `.infer`), and the controls of
one AdaIN bulk job (`AdainControls`): torch-free, so params.yaml validates and jobs are planned
without torch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from stylepipe.config import NAME, Section, TrainBase


# Long side a painting is encoded at for its statistics at run time (texture scale): the bulk
# default, the saved network's default painting and the evaluate stage all use it.
STYLE_SIZE = 512


class TrainParams(TrainBase):
    steps: int = Field(default=2000, ge=1, le=10_000_000)
    # The paintings: a `datasets:` entry of kind photos, preprocessed like photos. Its train split
    # is trained on; its val split is held out (the saved network's default painting is its first).
    styles: str = Field(pattern=NAME.pattern)
    encoder: Literal["efficientnet_lite0", "vgg16", "vgg19"] = "efficientnet_lite0"
    # Where content features get the painting's channel mean/std; "": the encoder's default
    # (models/adain/network.py DEFAULT_LAYERS).
    layer: str = ""
    style_layers: list[str] = Field(default_factory=list)   # mean/std style loss; empty: default
    # Decoder channels from the AdaIN layer's resolution up to full resolution; empty: automatic.
    widths: list[int] = Field(default_factory=list)
    image_size: int = Field(default=192, ge=32, le=4096)    # random crops of the photos
    style_size: int = Field(default=192, ge=32, le=4096)    # random crops of the paintings
    lr: float = Field(default=1e-3, gt=0)
    content_weight: float = Field(default=1.0, gt=0)
    style_weight: float = Field(default=1.0, gt=0)


class InferParams(Section):
    """Nothing of its own: the infer stage stylizes the held-out photos with the network's default
    painting (the first held-out one); `stylepipe stylize --adain-style` takes any painting."""


@dataclass(frozen=True)
class AdainControls:
    """One bulk job's controls (models/adain/network.py `stylize`): paintings and their weights
    (interpolated; with a mask, the first painting goes to the mask's white region, a second one
    to its black region, which otherwise keeps the photo), the content-style trade-off alpha in
    [0,1], and the mask image (any size: it is resized to each image). With a manifest (a CSV of
    `input,painting` rows: tasks/bulk/paintings.py), each input it names gets its own painting
    instead; `paintings` (may then be empty) serve the inputs it does not name."""

    paintings: tuple[tuple[str, float], ...]
    alpha: float = 1.0
    mask: str | None = None
    style_size: int = STYLE_SIZE  # long side each painting is encoded at: sets the scale of its texture
    manifest: str | None = None

    def __post_init__(self):
        # a Prefect flow's parameters arrive as JSON lists
        object.__setattr__(self, "paintings", tuple((str(p), float(w)) for p, w in self.paintings))
        if not self.paintings and not self.manifest:
            raise ValueError("AdaIN needs at least one painting, or a manifest")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha {self.alpha}: must be between 0 and 1")
        if self.paintings and (any(w < 0 for _, w in self.paintings) or sum(w for _, w in self.paintings) <= 0):
            raise ValueError("painting weights must be >= 0 and not all 0")
        if not 32 <= self.style_size <= 4096:
            raise ValueError(f"style size {self.style_size}: must be 32 to 4096")
        if self.mask is not None and len(self.paintings) > 2:
            raise ValueError("a mask assigns at most two paintings (white region, black region)")
