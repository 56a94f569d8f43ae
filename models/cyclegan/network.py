"""CycleGAN's ResNet generator (Zhu et al. 2017, after Johnson et al.): a 7x7 conv, two stride-2
convs down, residual blocks, two stride-2 transposed convs up, a 7x7 conv to tanh; reflection
padding. Input sides must be multiples of 4 (Translator pads to that). residual: the input plus
the last conv's output, no tanh."""
from __future__ import annotations

from torch import Tensor, nn

from models.translation import norm_layer, upsample_conv

STRIDE = 4


class ResnetBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        bias = norm != "batch"
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", upsample: str = "transpose", residual: bool = False):
        super().__init__()
        self.residual = residual
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias),
                                   norm_layer(norm, ngf), nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=bias), norm_layer(norm, 2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [upsample_conv(c, c // 2, upsample, bias, kernel=3),
                       norm_layer(norm, c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7)] + ([] if residual else [nn.Tanh()])
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.model(x) if self.residual else self.model(x)
