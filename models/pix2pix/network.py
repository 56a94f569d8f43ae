"""pix2pix's U-Net generator (Isola et al. 2017; as in junyanz/pytorch-CycleGAN-and-pix2pix):
an encoder of stride-2 4x4 convs, a decoder of stride-2 4x4 transposed convs, each decoder level
fed the matching encoder output (skip connection); dropout in the innermost decoder blocks."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.translation import norm_layer, upsample_conv


class UNetBlock(nn.Module):
    """One level: down, the inner levels (or nothing), up; the input is concatenated to the output
    except at the outermost level, which ends in tanh unless told not to (a residual U-Net)."""

    def __init__(self, outer: int, inner: int, in_channels: int | None = None, sub: nn.Module | None = None,
                 outermost: bool = False, innermost: bool = False, norm: str = "batch", dropout: bool = False,
                 upsample: str = "transpose", tanh: bool = True):
        super().__init__()
        self.outermost = outermost
        bias = norm != "batch"
        in_channels = in_channels or outer
        down = [nn.Conv2d(in_channels, inner, 4, 2, 1, bias=bias)]
        if outermost:
            up = [nn.ReLU(True), upsample_conv(inner * 2, outer, upsample, True)] + ([nn.Tanh()] if tanh else [])
            layers = down + [sub] + up
        elif innermost:
            up = [nn.ReLU(True), upsample_conv(inner, outer, upsample, bias), norm_layer(norm, outer)]
            layers = [nn.LeakyReLU(0.2, True)] + down + up
        else:
            down = [nn.LeakyReLU(0.2, True)] + down + [norm_layer(norm, inner)]
            up = [nn.ReLU(True), upsample_conv(inner * 2, outer, upsample, bias), norm_layer(norm, outer)]
            layers = down + [sub] + up + ([nn.Dropout(0.5)] if dropout else [])
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        # not in-place: the LeakyReLU at the start of the block must not overwrite the skip input
        return torch.cat([x, self.model(x)], 1)


class UNet(nn.Module):
    """num_downs levels; widths ngf, 2ngf, 4ngf, then 8ngf for every deeper level. Input sides
    must be multiples of 2**num_downs (Translator pads to that). residual: the input plus the last
    conv's output, no tanh."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: int = 8,
                 norm: str = "batch", dropout: bool = True, upsample: str = "transpose", residual: bool = False):
        super().__init__()
        self.residual = residual
        widths = [min(2 ** i, 8) * ngf for i in range(num_downs)]  # encoder outputs, outer to inner
        block = UNetBlock(widths[-2], widths[-1], innermost=True, norm=norm, upsample=upsample)
        for i in range(num_downs - 2, 0, -1):
            # dropout where the width has stopped growing (the paper's three 8ngf blocks at 256 px)
            block = UNetBlock(widths[i - 1], widths[i], sub=block, norm=norm,
                              dropout=dropout and widths[i - 1] == widths[i], upsample=upsample)
        self.model = UNetBlock(out_channels, ngf, in_channels=in_channels, sub=block, outermost=True, norm=norm,
                               upsample=upsample, tanh=not residual)
        self.num_downs = num_downs

    def forward(self, x: Tensor) -> Tensor:
        return x + self.model(x) if self.residual else self.model(x)
