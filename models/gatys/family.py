"""gatys: style transfer by optimisation (models/gatys/optimize.py). Nothing is trained: the saved
"model" is the painting itself, as a uint8 buffer, so that it travels and is versioned like any
other model; the runner optimises each image against it."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.family import Family, TrainInputs, Trainer
from models.gatys.optimize import GatysConfig, build_gatys_encoder, gatys
from models.gatys.params import TrainParams


class Painting(nn.Module):
    """The painting as a (3,H,W) uint8 buffer. Calling it optimises images against it."""

    def __init__(self, height: int, width: int, config: GatysConfig | None = None):
        super().__init__()
        self.register_buffer("painting", torch.zeros(3, height, width, dtype=torch.uint8))
        self.config = config or GatysConfig()
        self._encoder = None

    def image(self) -> Tensor:
        return self.painting.float().div(255)

    def forward(self, photos: Tensor) -> Tensor:
        """(N,3,H,W) in [0,1] -> each optimised at its own size (config.sizes[-1] at most)."""
        if self._encoder is None:
            self._encoder = build_gatys_encoder(self.config, photos.device)
        with torch.inference_mode(False), torch.enable_grad():
            results = [gatys(p[None].clone(), self.image(), self.config, encoder=self._encoder,
                             device=photos.device).image for p in photos]
        return torch.cat(results).to(photos.device)


class GatysTrainer(Trainer):
    loss_names = ()

    def __init__(self, tp: TrainParams, inputs: TrainInputs):
        super().__init__()
        image = inputs.painting(tp.painting_size)
        self.painting = Painting(*image.shape[1:])
        self.painting.painting.copy_((image * 255).round().to(torch.uint8))

    def inference_network(self) -> nn.Module:
        return self.painting

    def sidecar(self) -> dict:
        return {"painting_shape": list(self.painting.painting.shape[1:])}


def build(sidecar: dict) -> nn.Module:
    height, width = sidecar["painting_shape"]
    return Painting(int(height), int(width))


FAMILY = Family("gatys", GatysTrainer, build,
                shared_code=("models/gatys/optimize.py", "models/encoders.py", "models/losses.py"))
