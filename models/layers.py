"""Small building blocks shared by the generator families (dcgan, cgan, vae)."""
from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

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


def discriminator_features(in_channels: int, ndf: int, n_down: int, extra_layers: int = 0,
                           spectral_norm: bool = False) -> tuple[nn.Sequential, int]:
    """A DCGAN discriminator's convolutions: n_down stride-2 4x4 convs doubling the width from ndf
    (LeakyReLU 0.2; BatchNorm after all but the first, or spectral norm instead), then
    `extra_layers` 3x3 stride-1 convs at the last resolution. Returns (layers, output width)."""
    sn = _spectral_norm if spectral_norm else (lambda m: m)
    layers, width = [sn(nn.Conv2d(in_channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)], ndf
    steps = [(width * 2 ** i, width * 2 ** (i + 1), 4, 2) for i in range(n_down - 1)]
    width = ndf * 2 ** (n_down - 1)
    steps += [(width, width, 3, 1)] * extra_layers
    for cin, cout, kernel, stride in steps:
        layers.append(sn(nn.Conv2d(cin, cout, kernel, stride, 1, bias=spectral_norm)))
        if not spectral_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers), width
