"""A real FID, only when the user supplies the weights of the Inception network it is defined with.

FID (Heusel et al. 2017) is a Fréchet distance in the 2048-d pool features of TensorFlow's 2015
Inception graph; pytorch-fid's port of it (architecture from the `pytorch-fid` package, weights file
`pt_inception-2015-12-05-6726825d.pth`) reproduces the published numbers. Nothing can be fetched at
run time here, so the weights come the way every weight file does: list
`{url: https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth}`
under params.yaml `download.weights` (the download stage checks the sha256 prefix in the name and
DVC versions data/weights). evaluate then reports `fid_inception` beside `fd_effnetl0`. Without the
file there is no FID, and no other network's distance carries the name.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stylepipe.errors import StageError

WEIGHTS_GLOB = "pt_inception-2015-12-05-*.pth"
INPUT_SIZE = 299
# pytorch-fid's blocks 0-3, in order: the input to the 2048-d average pool ("pool3")
POOL3_PATH = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "maxpool", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def find_weights(weights_dir: Path) -> Path | None:
    """The FID Inception weights in weights_dir, or None; a file whose sha256 does not start with the
    hex prefix in its name is refused (it would give numbers that are not FID)."""
    found = sorted(Path(weights_dir).glob(WEIGHTS_GLOB))
    if not found:
        return None
    path = found[-1]
    prefix = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise StageError(f"{path}: sha256 {digest[:12]}... does not match the {prefix!r} in its name")
    return path


class FIDInception(nn.Module):
    """Images in [0, 1] (N, C, H, W), grey or RGB, any size -> (N, 2048) pool3 features, the way
    pytorch-fid computes them: bilinear resize to 299, scale to [-1, 1]."""

    def __init__(self, state_dict: dict[str, Tensor] | None = None):
        super().__init__()
        from pytorch_fid import inception as fid  # the published architecture, not a copy of it

        net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = fid.FIDInceptionE_1(1280)
        net.Mixed_7c = fid.FIDInceptionE_2(2048)
        if state_dict is not None:
            net.load_state_dict(state_dict)
        self.net = net  # the classifier (fc) is loaded with the file but never run
        self.eval().requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for name in POOL3_PATH:
            x = F.max_pool2d(x, kernel_size=3, stride=2) if name == "maxpool" else getattr(self.net, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

def load(path: Path) -> FIDInception:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return FIDInception(state)
    except Exception as e:  # a truncated or foreign file: say which one
        raise StageError(f"could not load the FID Inception weights {path}: {e}") from e


@torch.no_grad()
def features(net: FIDInception, images: Tensor, device: torch.device, batch: int = 100) -> Tensor:
    net = net.to(device)
    return torch.cat([net(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])
