"""Convolutional VAE for 28/32/64 px images (Kingma & Welling, 2014).

Encoder: stride-2 convs -> MLP -> (mu, logvar). Decoder mirrors it and returns
Bernoulli logits per pixel (sigmoid(logits) is the mean image in [0, 1]).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers import resolution_plan

class Encoder(nn.Module):
    def __init__(self, zdim: int, width: int, hidden: int, channels: int, image_size: int):
        super().__init__()
        base, n_down = resolution_plan(image_size)
        layers, ch = [], channels
        for i in range(n_down):
            out = width * 2 ** i
            layers += [nn.Conv2d(ch, out, 4, 2, 1), nn.ReLU(inplace=True)]
            ch = out
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(ch * base * base, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * zdim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.mlp(self.conv(x)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, zdim: int, width: int, hidden: int, channels: int, image_size: int):
        super().__init__()
        base, n_up = resolution_plan(image_size)
        ch = width * 2 ** (n_up - 1)
        self.mlp = nn.Sequential(nn.Linear(zdim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, ch * base * base), nn.ReLU(inplace=True),
                                 nn.Unflatten(1, (ch, base, base)))
        layers = []
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.ReLU(inplace=True)]
            ch //= 2
        layers.append(nn.ConvTranspose2d(ch, channels, 4, 2, 1))  # logits
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.mlp(z))


class VAE(nn.Module):
    def __init__(self, zdim: int = 16, width: int = 32, hidden: int = 256, channels: int = 1, image_size: int = 28):
        super().__init__()
        self.zdim = zdim
        self.encoder = Encoder(zdim, width, hidden, channels, image_size)
        self.decoder = Decoder(zdim, width, hidden, channels, image_size)

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x in [0, 1]; eps ~ N(0, I) of shape (N, zdim). Returns (logits, mu, logvar)."""
        mu, logvar = self.encoder(x * 2 - 1)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar
