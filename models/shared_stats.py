"""Instance norms whose statistics come from another input: how an image too large for one pass is
run in tiles (tasks/bulk/tiling.py) without each tile taking its own colour and contrast.

As in "Thumbnail Instance Normalization" (Chen et al., AAAI 2022), every norm layer records its
per-channel statistics once, on a thumbnail of the whole image (or, for a much larger image, a
mosaic of its own pixels: tasks/bulk/tiling.py statistics_image), and then normalizes every tile
with them. The same modules serve PyTorch (tasks/bulk/runners.py) and the ONNX tile graphs
(models/export.py export_tile_graphs), so the two runtimes tile alike.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class SharedStatsNorm(nn.Module):
    """An InstanceNorm2d that records its per-channel statistics on one input (the statistics image) and
    then normalizes every later input (the tiles) with them, as one multiply-add: the norm and its
    affine folded into `scale_shift` per channel, (1, C, 1, 1) each, in fp32."""

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.recording = False
        self.scale_shift: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()  # statistics in fp32 under autocast too
        if self.recording:
            var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)
            scale = torch.rsqrt(var + self.eps)
            shift = -mean * scale
            if self.weight is not None:
                weight, bias = self.weight.float()[None, :, None, None], self.bias.float()[None, :, None, None]
                scale, shift = scale * weight, shift * weight + bias
            self.scale_shift = (scale, shift)
        if self.scale_shift is None:
            raise RuntimeError("record the statistics before stylizing tiles")
        scale, shift = self.scale_shift
        return torch.addcmul(shift, xf, scale).to(x.dtype)


def with_shared_stats(net: nn.Module) -> nn.Module:
    """A copy of `net` whose instance norms are SharedStatsNorm (the weights are shared, not copied)."""
    tiled = copy.copy(net)
    tiled._modules = dict(net._modules)
    for name, child in net.named_children():
        if isinstance(child, nn.InstanceNorm2d):
            tiled._modules[name] = SharedStatsNorm(child)
        elif len(child._modules):
            tiled._modules[name] = with_shared_stats(child)
    return tiled


def shared_norms(net: nn.Module) -> list[SharedStatsNorm]:
    """The net's SharedStatsNorms, in module order (the order of the ONNX tile graphs' statistics)."""
    return [m for m in net.modules() if isinstance(m, SharedStatsNorm)]


def set_recording(net: nn.Module, recording: bool) -> None:
    for m in shared_norms(net):
        m.recording = recording
