"""Small building blocks shared by the generator families (dcgan, cgan, vae)."""
from __future__ import annotations

from torch import nn

# image side -> (base resolution, number of 2x resamplings between it and the image)
SIZES = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def resolution_plan(image_size: int) -> tuple[int, int]:
    if image_size not in SIZES:
        raise ValueError(f"image_size must be one of {sorted(SIZES)}, got {image_size}")
    return SIZES[image_size]


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) conv/linear weights, N(1, 0.02) BatchNorm scales (the DCGAN paper's init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
