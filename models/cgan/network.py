"""Class-conditional DCGAN-style networks for 28/32/64 px, sized for CPU.

Generator: [z, embed(y)] -> DCGAN generator, output in [-1, 1].
Discriminator, two conditioning schemes (``cond``):
  'projection' (Miyato & Koyama, 2018): logit = head(h) + <embed(y), sum_xy h>
  'concat': one-hot label maps concatenated to the input image channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from models.layers import discriminator_features, init_dcgan_weights, resolution_plan

class Generator(nn.Module):
    def __init__(self, nz: int = 64, ngf: int = 64, channels: int = 1, image_size: int = 28,
                 num_classes: int = 10, emb_dim: int = 16, extra_layers: int = 0):
        super().__init__()
        base, n_up = resolution_plan(image_size)
        self.nz, self.num_classes = nz, num_classes
        self.embed = nn.Embedding(num_classes, emb_dim)
        width = ngf * 2 ** (n_up - 1)
        self.stem = nn.Sequential(nn.ConvTranspose2d(nz + emb_dim, width, base, 1, 0, bias=False),
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
        nn.init.normal_(self.embed.weight, 0.0, 1.0)  # same scale as z

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = torch.cat([z.view(z.shape[0], -1), self.embed(y)], 1)
        return self.to_image(self.body(self.stem(h[:, :, None, None])))


class Discriminator(nn.Module):
    def __init__(self, ndf: int = 64, channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 spectral_norm: bool = False, cond: str = "projection", extra_layers: int = 0):
        super().__init__()
        if cond not in ("projection", "concat"):
            raise ValueError(f"cond must be 'projection' or 'concat', got {cond!r}")
        base, n_down = resolution_plan(image_size)
        self.cond, self.num_classes = cond, num_classes
        sn = _sn if spectral_norm else (lambda m: m)
        in_ch = channels + (num_classes if cond == "concat" else 0)
        self.features, width = discriminator_features(in_ch, ndf, n_down, extra_layers, spectral_norm)
        self.head = sn(nn.Conv2d(width, 1, base, 1, 0))
        init_dcgan_weights(self)
        if cond == "projection":
            self.embed = sn(nn.Embedding(num_classes, width))
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.cond == "concat":
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, onehot.expand(-1, -1, *x.shape[-2:])], 1)
        h = self.features(x)
        out = self.head(h).view(-1)
        if self.cond == "projection":
            out = out + (self.embed(y) * h.sum((2, 3))).sum(1)
        return out
