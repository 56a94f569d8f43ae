"""Distances between two sets of images through a fixed feature extractor (no Inception weights
can be fetched here, so none is pretended): the Fréchet distance and the kernel inception
distance's unbiased MMD, both computed in EfficientNet-Lite0 features and named for it
(`fd_effnetl0`, `kid_effnetl0`), and improved precision/recall (Kynkäänniemi et al. 2019).
Beside each: the real-vs-real floor (training split against held-out split, same sizes), since
a distance means little without the value two samples of the real data give."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FEATURE_SIZE = 96       # images are upsampled to this before EfficientNet-Lite0 (stride 32: 3x3 maps)


def effnet_extractor(device: torch.device):
    from models.encoders import build_encoder

    return build_encoder("efficientnet_lite0", ["head"]).to(device).eval()


@torch.no_grad()
def effnet_features(extractor, images: Tensor, device: torch.device, batch: int = 250) -> Tensor:
    """[0, 1] images (N, C, H, W), grey or RGB -> globally pooled 1280-d head features."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear", align_corners=False)
        out.append(extractor(x)["head"].mean(dim=(2, 3)).float().cpu())
    return torch.cat(out)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(Ca + Cb - 2 (Ca Cb)^1/2) of Gaussians fitted to (N, D) features."""
    x, y = a.double().numpy(), b.double().numpy()
    ca, cb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ cb @ root_a  # same eigenvalues as Ca Cb, but symmetric
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * cross)


def kernel_distance(a: Tensor, b: Tensor, subsets: int = 10, subset_size: int = 500, seed: int = 0) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (d^-1 x.y + 1)^3, averaged over subsets
    (Bińkowski et al. 2018, the KID estimator)."""
    x, y = a.double(), b.double()
    n = min(subset_size, len(x), len(y))
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    total = 0.0
    for _ in range(subsets):
        xs = x[torch.randperm(len(x), generator=gen)[:n]]
        ys = y[torch.randperm(len(y), generator=gen)[:n]]
        kxx, kyy, kxy = ((xs @ xs.T) / d + 1) ** 3, ((ys @ ys.T) / d + 1) ** 3, ((xs @ ys.T) / d + 1) ** 3
        total += float((kxx.sum() - kxx.diag().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diag().sum()) / (n * (n - 1))
                       - 2 * kxy.mean())
    return total / subsets


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision (fakes inside the real manifold: within some real's k-NN radius) and
    recall (reals inside the fake manifold)."""
    def radii(x: Tensor) -> Tensor:
        d = torch.cdist(x, x)
        return d.kthvalue(k + 1, dim=1).values  # the 0th neighbour is the point itself

    def covered(points: Tensor, support: Tensor, r: Tensor) -> float:
        return float((torch.cdist(points, support) <= r[None, :]).any(1).float().mean())

    real, fake = real.double(), fake.double()
    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))
