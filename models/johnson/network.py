"""Feed-forward style-transfer networks: images in [0,1] -> stylised images in [0,1].

"classic" is Johnson et al.'s TransformerNet (as in pytorch/examples fast_neural_style).
"fast" keeps its shape but is cut for CPUs, where the network itself, not the loss network,
dominates a training step and all of bulk stylisation: half the channels, depthwise-separable
residual blocks, a decoder that does its convs at stride 4 and 2 only, and a 5x5 instead of a 9x9
output conv (oneDNN's backward pass of a 9x9 conv with 3 output channels took longer than the rest
of the network). ~10x fewer FLOPs, ~5-7x less CPU time per image.
"slim" (issue 16) is "fast" with the two convolutions that cost most on a CPU made cheaper, chosen
by where onnxruntime spends its time: a 5x5 instead of a 9x9 input conv (the only conv at full
resolution besides the output's), and a decoder that convolves at stride 4 and then upsamples,
instead of upsampling to stride 2 and then convolving (4x fewer multiply-adds in that conv). 20
kFLOP/pixel against fast's 32; 1.33x faster through onnxruntime on one core at 512 px. Not the
default: its outputs look as good, but score about 1.25x worse on the quality gate's style loss
(docs/style-quality.md, section 10).

Upsampling (`upsample`): "bilinear" is the fast and slim networks' default (since issue 15): resize-conv
(Odena et al. 2016) with bilinear resizing, and a fixed blur before the last upsampling (see
TransformerNet); where the output saturates a faint grid can come back through it. "antialiased"
blurs before both upsamplings, which removes that too, at some softness (docs/style-quality.md,
section 9: not the default, the quality gate's head-to-head prefers bilinear at the quick preset).
Before issue 15 the fast network used a pixel shuffle from stride 4 to 2, then x2 nearest
("pixelshuffle"), which stamped a 4-pixel grid on every trained output (tasks/evaluation/spectrum.py:
power at (1/4,1/4) cycles/pixel 221-884 x its ring after the default training, photos and
paintings 0.14-2.1; docs/style-quality.md has the runs). "nearest" is Johnson's (the classic
network's default). Sidecars written before the option existed have no `upsample` key: they
rebuild what was trained (LEGACY_UPSAMPLE).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


UPSAMPLE = ("antialiased", "bilinear", "nearest", "pixelshuffle")
DEFAULT_UPSAMPLE = {"slim": "bilinear", "fast": "bilinear", "classic": "nearest"}
# sidecars without `upsample` (written before the option; slim came later and always records it)
LEGACY_UPSAMPLE = {"fast": "pixelshuffle", "classic": "nearest"}


def resize(factor: int, mode: str, channels: int | None = None) -> nn.Module:
    """channels: of the input; the antialiasing blur needs it (it is one filter per channel)."""
    if mode == "antialiased":
        if channels is None:
            raise ValueError("an antialiased resize needs its input's channel count")
        return nn.Sequential(Blur(channels), resize(factor, "bilinear"))
    if mode == "bilinear":
        return nn.Upsample(scale_factor=factor, mode="bilinear", align_corners=False)
    return nn.Upsample(scale_factor=factor, mode="nearest")


class Blur(nn.Module):
    """Fixed [1,2,1] x [1,2,1] / 16 low-pass per channel (reflection-padded): zero response at the
    Nyquist frequency of its input. No parameters, no saved buffers: adding one changes no weight
    names."""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).contiguous(),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, [1, 1, 1, 1], mode="reflect"), self.kernel, groups=x.shape[1])


class ConvLayer(nn.Sequential):
    """Reflection-padded conv (+ instance norm + ReLU unless last)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: int = 1,
                 norm_act: bool = True, groups: int = 1, mode: str = "nearest"):
        layers: list[nn.Module] = []
        if upsample > 1:
            layers.append(resize(upsample, mode, cin))
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


class _SigmoidWithGradientFloor(torch.autograd.Function):
    """sigmoid forward; backward uses max(sigmoid', floor). A plain sigmoid passes almost no gradient
    at a saturated pixel (sigmoid'(13) ~ 2e-6), so a region that once blows out to white stays white
    for the rest of training (docs/style-quality.md, section 14)."""

    @staticmethod
    def forward(ctx, y: Tensor, floor: float) -> Tensor:
        out = torch.sigmoid(y)
        ctx.save_for_backward(out)
        ctx.floor = floor
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (out,) = ctx.saved_tensors
        return grad * (out * (1 - out)).clamp_min(ctx.floor), None


class TransformerNet(nn.Module):
    """Encoder (stride 4) -> residual blocks -> decoder (two x2 upsamplings, then an output conv).

    widths: channels at stride 1, 2, 4. cheap: depthwise-separable residual blocks and a decoder
    that does almost nothing at full resolution (the stride-2 conv runs before the last
    upsampling, so only the output conv sees full resolution). conv_before_upsample: the first
    upsampling too follows its conv (the conv runs at stride 4 instead of 2). upsample: see the
    module docstring.
    The output goes through a sigmoid to stay in [0,1]; `gradient_floor` > 0 (training only) keeps
    its gradient at least that large. Inputs whose sides are not multiples of 4 are padded and the
    output cropped."""

    gradient_floor = 0.0

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), blocks: int = 5,
                 in_kernel: int = 9, out_kernel: int = 9, cheap: bool = False, upsample: str = "nearest",
                 conv_before_upsample: bool = False):
        super().__init__()
        c1, c2, c3 = widths
        block = SeparableResidualBlock if cheap else ResidualBlock
        self.encoder = nn.Sequential(
            ConvLayer(3, c1, in_kernel), ConvLayer(c1, c2, 3, stride=2), ConvLayer(c2, c3, 3, stride=2)
        )
        self.res = nn.Sequential(*[block(c3) for _ in range(blocks)])
        if upsample not in UPSAMPLE:
            raise ValueError(f"upsample {upsample!r}; expected one of {', '.join(UPSAMPLE)}")
        if conv_before_upsample and upsample == "pixelshuffle":
            raise ValueError("upsample 'pixelshuffle' is the fast network's old decoder; this network convolves "
                             "before upsampling: use bilinear, antialiased or nearest")
        if upsample == "pixelshuffle":
            first = PixelShuffleUp(c3, c2)
        elif conv_before_upsample:
            first = nn.Sequential(ConvLayer(c3, c2, 3), resize(2, upsample, c2))
        else:
            first = ConvLayer(c3, c2, 3, upsample=2, mode=upsample)
        if cheap and upsample in ("bilinear", "antialiased"):
            # The last nonlinearity runs at stride 2; a checkerboard there is exactly the
            # (1/4,1/4) cycles/pixel grid at full resolution, and everything after it (upsampling,
            # output conv) is linear. The blur's zero at stride 2's Nyquist frequency removes it.
            # "antialiased" also blurs the stride-4 map before its upsampling: its checkerboard
            # (period 8 px) passes the stride-2 blur at half strength and a saturating output
            # sigmoid turns it back into the period-4 grid (docs/style-quality.md, section 9).
            up = [first, nn.Sequential(ConvLayer(c2, c1, 3), Blur(c1), resize(2, "bilinear"))]
        elif cheap:
            last_mode = "nearest" if upsample == "pixelshuffle" else upsample
            up = [first, nn.Sequential(ConvLayer(c2, c1, 3), resize(2, last_mode))]
        elif upsample == "pixelshuffle":
            up = [first, PixelShuffleUp(c2, c1)]
        else:
            up = [first, ConvLayer(c2, c1, 3, upsample=2, mode=upsample)]
        self.decoder = nn.Sequential(*up, ConvLayer(c1, 3, out_kernel, norm_act=False))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % 4, -w % 4
        if ph or pw:
            # reflection padding needs pad < size; replicate covers tiny images
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, [0, pw, 0, ph], mode=mode)
        y = self.decoder(self.res(self.encoder(x)))[..., :h, :w]
        if self.training and self.gradient_floor > 0:
            return _SigmoidWithGradientFloor.apply(y, self.gradient_floor)
        return torch.sigmoid(y)


NETWORKS = {
    "classic": dict(widths=(32, 64, 128), blocks=5, in_kernel=9, out_kernel=9),
    "fast": dict(widths=(16, 32, 64), blocks=5, in_kernel=9, out_kernel=5, cheap=True),
    "slim": dict(widths=(16, 32, 64), blocks=5, in_kernel=5, out_kernel=5, cheap=True, conv_before_upsample=True),
}


def build_network(name: str, upsample: str | None = None) -> nn.Module:
    """upsample None: the network's current default (DEFAULT_UPSAMPLE)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}")
    return TransformerNet(**NETWORKS[name], upsample=upsample or DEFAULT_UPSAMPLE[name])


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def flops_per_pixel(name: str, size: int = 512, upsample: str | None = None) -> float:
    """Forward FLOPs (a multiply-add = 2) of one size x size image, divided by its pixels."""
    return network_flops_per_pixel(build_network(name, upsample).eval(), size)


def network_flops_per_pixel(net: nn.Module, size: int = 512) -> float:
    """flops_per_pixel of a network already built (a loaded model: whatever its sidecar said)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(net.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size, device=device))
    return counter.get_total_flops() / (size * size)
