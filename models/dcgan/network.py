"""DCGAN networks (Radford et al., 2016), sized for CPU training on 28/32/64 px.

Generator: z -> (linear for 28 px | 4x4 transposed conv otherwise) -> stride-2
transposed convs with BatchNorm+ReLU -> last transposed conv -> tanh, output in [-1, 1].
Discriminator: stride-2 convs with LeakyReLU(0.2), BatchNorm (or spectral norm,
then no BatchNorm) -> one logit per image.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

SIZES = {28: (7, 2), 32: (4, 3), 64: (4, 4)}  # image size -> (base resolution, number of 2x upsamplings)


def _check_size(image_size: int) -> tuple[int, int]:
    if image_size not in SIZES:
        raise ValueError(f"image_size must be one of {sorted(SIZES)}, got {image_size}")
    return SIZES[image_size]


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) conv/linear weights, N(1, 0.02) BatchNorm scales (DCGAN paper)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, nz: int = 64, ngf: int = 32, channels: int = 1, image_size: int = 28):
        super().__init__()
        base, n_up = _check_size(image_size)
        self.nz, self.image_size = nz, image_size
        width = ngf * 2 ** (n_up - 1)  # channels at the base resolution, halved at each upsampling
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(nz, width, base, 1, 0, bias=False),  # 1x1 -> base x base
            nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks = []
        for _ in range(n_up - 1):
            blocks += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        self.body = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())
        init_dcgan_weights(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.to_image(self.body(self.stem(z.view(z.shape[0], -1, 1, 1))))


class Discriminator(nn.Module):
    def __init__(self, ndf: int = 32, channels: int = 1, image_size: int = 28, spectral_norm: bool = False):
        super().__init__()
        base, n_down = _check_size(image_size)
        sn = _sn if spectral_norm else (lambda m: m)
        layers, width = [sn(nn.Conv2d(channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)], ndf
        for i in range(1, n_down):
            layers.append(sn(nn.Conv2d(width, width * 2, 4, 2, 1, bias=spectral_norm)))
            if not spectral_norm:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Conv2d(width, 1, base, 1, 0))  # base x base -> 1x1 logit
        init_dcgan_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).view(-1)
