"""DCGAN networks (Radford et al., 2016), sized for CPU training on 28/32/64 px.

Generator: z -> (linear for 28 px | 4x4 transposed conv otherwise) -> stride-2
transposed convs with BatchNorm+ReLU -> last transposed conv -> tanh, output in [-1, 1].
Discriminator: stride-2 convs with LeakyReLU(0.2), BatchNorm (or spectral norm,
then no BatchNorm) -> one logit per image.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from models.layers import discriminator_features, init_dcgan_weights, resolution_plan

class Generator(nn.Module):
    """latent_categories > 0: the input is [z, one-hot code] (nz + latent_categories values)."""

    def __init__(self, nz: int = 64, ngf: int = 64, channels: int = 1, image_size: int = 28,
                 extra_layers: int = 0, latent_categories: int = 0):
        super().__init__()
        base, n_up = resolution_plan(image_size)
        self.nz, self.image_size = nz, image_size
        width = ngf * 2 ** (n_up - 1)  # channels at the base resolution, halved at each upsampling
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(nz + latent_categories, width, base, 1, 0, bias=False),  # 1x1 -> base x base
            nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks = []
        for _ in range(extra_layers):  # 3x3 stride-1 blocks at the base resolution
            blocks += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
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
    """latent_categories > 0: forward returns (logit, code logits): InfoGAN's Q head shares D's
    features."""

    def __init__(self, ndf: int = 64, channels: int = 1, image_size: int = 28, spectral_norm: bool = False,
                 extra_layers: int = 0, latent_categories: int = 0):
        super().__init__()
        base, n_down = resolution_plan(image_size)
        sn = _sn if spectral_norm else (lambda m: m)
        self.features, width = discriminator_features(channels, ndf, n_down, extra_layers, spectral_norm)
        self.head = sn(nn.Conv2d(width, 1, base, 1, 0))  # base x base -> 1x1 logit
        self.code_head = nn.Conv2d(width, latent_categories, base, 1, 0) if latent_categories else None
        init_dcgan_weights(self)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        h = self.features(x)
        logit = self.head(h).view(-1)
        if self.code_head is None:
            return logit
        return logit, self.code_head(h).flatten(1)
