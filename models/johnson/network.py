"""Feed-forward style-transfer networks: images in [0,1] -> stylised images in [0,1].

"classic" is Johnson et al.'s TransformerNet (as in pytorch/examples fast_neural_style).
"fast" keeps its shape but is cut for CPUs, where the network itself, not the loss network,
dominates a training step and all of bulk stylisation: half the channels, depthwise-separable
residual blocks, a decoder that works at stride 2 and 4 (a pixel shuffle up to full resolution
was tried: it left a 2-pixel colour stripe pattern), and a 5x5 instead of a 9x9 output conv
(oneDNN's backward pass of a 9x9 conv with 3 output channels took longer than the rest of the
network). ~10x fewer FLOPs, ~5-7x less CPU time per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvLayer(nn.Sequential):
    """Reflection-padded conv (+ instance norm + ReLU unless last)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: int = 1,
                 norm_act: bool = True, groups: int = 1):
        layers: list[nn.Module] = []
        if upsample > 1:
            layers.append(nn.Upsample(scale_factor=upsample, mode="nearest"))
        layers += [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride, groups=groups)]
        if norm_act:
            layers += [nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Johnson's block: two 3x3 convs with instance norm."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                   nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class SeparableResidualBlock(nn.Module):
    """Two depthwise-separable 3x3 convs (depthwise 3x3, then pointwise 1x1 + norm): ~8x fewer
    FLOPs than ResidualBlock at the same width."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, groups=channels),
            nn.Conv2d(channels, channels, 1), nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, groups=channels),
            nn.Conv2d(channels, channels, 1), nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PixelShuffleUp(nn.Sequential):
    """x2 upsampling as conv (at the low resolution) -> pixel shuffle (+ norm + ReLU): the same
    FLOPs as nearest-upsample + conv but without full-resolution copies and padding."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        conv = nn.Conv2d(cin, cout * 4, kernel)
        # ICNR init (Aitken et al. 2017): the 4 sub-pixels start equal, i.e. as nearest upsampling,
        # so training does not start from a checkerboard.
        with torch.no_grad():
            conv.weight.copy_(conv.weight[::4].repeat_interleave(4, dim=0))
            conv.bias.copy_(conv.bias[::4].repeat_interleave(4))
        super().__init__(nn.ReflectionPad2d(kernel // 2), conv, nn.PixelShuffle(2),
                         nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True))


class TransformerNet(nn.Module):
    """Encoder (stride 4) -> residual blocks -> decoder (two x2 upsamplings, then an output conv).

    widths: channels at stride 1, 2, 4. cheap: depthwise-separable residual blocks and a decoder
    that does almost nothing at full resolution (pixel shuffle from stride 4 to 2; the stride-2
    conv runs before the nearest upsampling, so only the output conv sees full resolution).
    The output goes through a sigmoid to stay in [0,1]. Inputs whose sides are not multiples of 4
    are padded and the output cropped."""

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), blocks: int = 5,
                 in_kernel: int = 9, out_kernel: int = 9, cheap: bool = False):
        super().__init__()
        c1, c2, c3 = widths
        block = SeparableResidualBlock if cheap else ResidualBlock
        self.encoder = nn.Sequential(
            ConvLayer(3, c1, in_kernel), ConvLayer(c1, c2, 3, stride=2), ConvLayer(c2, c3, 3, stride=2)
        )
        self.res = nn.Sequential(*[block(c3) for _ in range(blocks)])
        if cheap:
            up = [PixelShuffleUp(c3, c2), nn.Sequential(ConvLayer(c2, c1, 3), nn.Upsample(scale_factor=2))]
        else:
            up = [ConvLayer(c3, c2, 3, upsample=2), ConvLayer(c2, c1, 3, upsample=2)]
        self.decoder = nn.Sequential(*up, ConvLayer(c1, 3, out_kernel, norm_act=False))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % 4, -w % 4
        if ph or pw:
            # reflection padding needs pad < size; replicate covers tiny images
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, [0, pw, 0, ph], mode=mode)
        y = self.decoder(self.res(self.encoder(x)))
        return torch.sigmoid(y[..., :h, :w])


NETWORKS = {
    "classic": dict(widths=(32, 64, 128), blocks=5, in_kernel=9, out_kernel=9),
    "fast": dict(widths=(16, 32, 64), blocks=5, in_kernel=9, out_kernel=5, cheap=True),
}


def build_network(name: str) -> nn.Module:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}")
    return TransformerNet(**NETWORKS[name])


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def flops_per_pixel(name: str, size: int = 512) -> float:
    """Forward FLOPs (a multiply-add = 2) of one size x size image, divided by its pixels."""
    from torch.utils.flop_counter import FlopCounterMode

    net = build_network(name).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / (size * size)
