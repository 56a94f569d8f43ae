"""AdaIN (Huang & Belongie 2017): a frozen encoder, adaptive instance normalisation (the content
features' channel mean/std replaced by the painting's), and a decoder trained to turn the result
back into an image. Any painting at run time, one forward pass per image.

`stylize()` is the whole inference, controls included, as a pure function of its inputs:
alpha (content-style trade-off at feature level), style interpolation (weighted paintings), a
spatial mask (regions get different paintings, or none) and colour preservation (the stylized
luminance on the photo's colours).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.encoders import Encoder, build_encoder, check_layers

EPS = 1e-5
# Per encoder: (AdaIN layer, style-loss layers from the stem up to it, as the paper's relu1_1 ..
# relu4_1). Lite0: block3.expand (ReLU6 of block 3's expansion, 144 channels, stride 4). The
# paper's depth, block5.expand (240 channels, stride 8), was tried: at the same 1000 steps it
# kept half the structure (SSIM 0.24-0.30 vs 0.50-0.54) for a similar style-loss drop, and its
# alpha-0 image was far from the photo (docs/adain.md).
DEFAULT_LAYERS = {
    "efficientnet_lite0": ("block3.expand", ["stem", "block1.expand", "block3.expand"]),
    "vgg16": ("relu4_1", ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]),
    "vgg19": ("relu4_1", ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]),
}
LUMA = (0.299, 0.587, 0.114)  # BT.601, as tasks/bulk/runners.py


def resolve_layers(encoder: str, layer: str, style_layers: Sequence[str]) -> tuple[str, list[str]]:
    default_layer, default_style = DEFAULT_LAYERS[encoder]
    layer = layer or default_layer
    style_layers = list(style_layers) or default_style
    check_layers(encoder, [layer], "AdaIN layer")
    check_layers(encoder, style_layers, "style layer")
    return layer, style_layers


def trim_encoder(encoder: Encoder) -> Encoder:
    """Drop what lies beyond the deepest requested layer: those weights are never used, and the
    saved model (which holds the encoder) stays small."""
    net = encoder.net
    if encoder.name == "efficientnet_lite0":
        deepest = max((int(n.split(".")[0][5:]) for n in encoder.layers if n.startswith("block")), default=-1)
        net._blocks = nn.ModuleList(list(net._blocks)[: deepest + 1])
        for name in ("_conv_head", "_bn1", "_fc"):
            delattr(net, name)
    else:
        encoder.net = net[: encoder._last + 1]
    return encoder


def mean_std(features: Tensor, region: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Channel mean and std, (N,C,1,1) each; over `region` ((N,1,H,W) bool) only when given."""
    if region is None:
        mean = features.mean(dim=(2, 3), keepdim=True)
        var = features.var(dim=(2, 3), keepdim=True, unbiased=False)
    else:
        w = region.to(features.dtype)
        count = w.sum(dim=(2, 3), keepdim=True).clamp_min(1)
        mean = (features * w).sum(dim=(2, 3), keepdim=True) / count
        var = ((features - mean) ** 2 * w).sum(dim=(2, 3), keepdim=True) / count
    return mean, (var + EPS).sqrt()


def adain(content: Tensor, style_mean: Tensor, style_std: Tensor, region: Tensor | None = None) -> Tensor:
    """Content features with their channel statistics (over `region`, if given) set to the style's."""
    mean, std = mean_std(content, region)
    return (content - mean) / std * style_std + style_mean


class Decoder(nn.Module):
    """AdaIN features -> RGB in [0,1]. Nearest-neighbour x2 upsampling + 3x3 convs (no transposed
    convs or pixel shuffle: no checkerboard), reflection padding, no normalisation layers (they would
    undo the statistics AdaIN just set). Two convs per level, one at full resolution, where a conv
    costs the most."""

    def __init__(self, channels: int, widths: Sequence[int]):
        super().__init__()
        widths = list(widths)
        layers: list[nn.Module] = [*_conv(channels, widths[0]), nn.ReLU(inplace=True)]
        for level, (cin, cout) in enumerate(zip(widths, widths[1:]), start=1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv(cin, cout), nn.ReLU(inplace=True)]
            if level < len(widths) - 1:
                layers += [*_conv(cout, cout), nn.ReLU(inplace=True)]
        layers += _conv(widths[-1], 3)
        self.body = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return torch.sigmoid(self.body(features))


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]


def default_widths(stride: int) -> list[int]:
    """Channels per level, AdaIN layer (1/stride) to full resolution: 16 at full, doubling per level, 256 at most."""
    ups = int(math.log2(stride))
    return [min(256, 16 * 2**k) for k in reversed(range(ups + 1))]


class AdaINNet(nn.Module):
    """Encoder (frozen) + decoder, plus a default painting's statistics, so that the network alone
    is an image family's runner: forward(photos) stylizes them after that painting."""

    def __init__(self, encoder: Encoder, layer: str, channels: int, stride: int, widths: Sequence[int]):
        super().__init__()
        self.encoder = encoder
        self.layer, self.stride = layer, stride
        self.decoder = Decoder(channels, widths)
        self.register_buffer("style_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("style_std", torch.ones(1, channels, 1, 1))

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images)[self.layer]

    def decode(self, features: Tensor, size: tuple[int, int]) -> Tensor:
        """The decoder's output cropped to `size` (the encoder pads up to its stride: "SAME")."""
        return self.decoder(features)[..., : size[0], : size[1]]

    def style_of(self, painting: Tensor) -> tuple[Tensor, Tensor]:
        """A painting (3,H,W) or (1,3,H,W) in [0,1] -> its statistics at the AdaIN layer."""
        return mean_std(self.encode(painting if painting.dim() == 4 else painting[None]))

    def forward(self, photos: Tensor) -> Tensor:
        return stylize(self, photos, [((self.style_mean, self.style_std), 1.0)])


Stats = tuple[Tensor, Tensor]


def mix(styles: Sequence[tuple[Stats, float]]) -> Stats:
    """Weighted paintings -> one set of statistics. AdaIN is affine in (mean, std), so this equals
    the weighted sum of each painting's AdaIN output (the reference implementation's interpolation)."""
    total = sum(w for _, w in styles)
    if total <= 0 or any(w < 0 for _, w in styles):
        raise ValueError("style weights must be >= 0 and not all 0")
    mean = sum(s[0] * (w / total) for s, w in styles)
    std = sum(s[1] * (w / total) for s, w in styles)
    return mean, std


def adain_target(features: Tensor, styles: Sequence[tuple[Stats, float]], alpha: float = 1.0,
                 mask: Tensor | None = None) -> Tensor:
    """The features the decoder turns into the stylized image.

    styles: [((mean, std), weight), ...], interpolated by weight. mask: (N,H,W) or (H,W) integer
    labels at any resolution (nearest-resized to the features): region k >= 1 gets styles[k-1]
    alone (weights ignored), with its own content statistics; region 0, or a label without a
    painting, keeps the content features. alpha: 0 = the content features, 1 = full style."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha {alpha}: must be between 0 and 1")
    if mask is None:
        target = adain(features, *mix(styles))
    else:
        labels = mask if mask.dim() == 3 else mask[None]
        labels = F.interpolate(labels[:, None].float(), size=features.shape[-2:], mode="nearest")
        labels = labels.expand(features.shape[0], 1, -1, -1)
        target = features
        for k, (stats, _) in enumerate(styles, start=1):
            region = labels == k
            if region.any():
                target = torch.where(region, adain(features, *stats, region=region), target)
    return torch.lerp(features, target, alpha) if alpha < 1 else target


def luma(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def keep_colors(styled: Tensor, photo: Tensor) -> Tensor:
    """The stylized luminance on the photo's chroma (YCbCr: moving Y alone moves R, G, B equally)."""
    return (photo + (luma(styled) - luma(photo))).clamp(0, 1)


def stylize(net: AdaINNet, content: Tensor, styles: Sequence[tuple[Stats, float]], alpha: float = 1.0,
            mask: Tensor | None = None, preserve_colors: bool = False) -> Tensor:
    """Photos (N,3,H,W) in [0,1] -> stylized, same size. styles: [(net.style_of(painting), weight)];
    see adain_target for alpha and mask."""
    features = net.encode(content)
    out = net.decode(adain_target(features, styles, alpha, mask), content.shape[-2:])
    return keep_colors(out, content) if preserve_colors else out


def build_adain(encoder_name: str, layer: str, style_layers: Sequence[str], channels: int, stride: int,
                widths: Sequence[int], pretrained: bool) -> AdaINNet:
    widths = list(widths) or default_widths(stride)
    if len(widths) != len(default_widths(stride)):
        raise ValueError(f"widths {widths}: need {len(default_widths(stride))} (one per level from the "
                         f"AdaIN layer, stride {stride}, to full resolution)")
    encoder = trim_encoder(build_encoder(encoder_name, [layer, *style_layers], pretrained=pretrained))
    return AdaINNet(encoder, layer, channels, stride, widths)


def probe(encoder: Encoder, layer: str) -> tuple[int, int]:
    """(channels, stride) of the encoder's `layer`."""
    with torch.no_grad():
        f = encoder(torch.zeros(1, 3, 64, 64, device=next(encoder.buffers()).device))[layer]
    return f.shape[1], 64 // f.shape[-1]
