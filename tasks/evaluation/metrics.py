"""The numbers of the evaluate stage: image loading at the evaluation size, losses under a fixed
evaluation encoder, SSIM, a colour-distribution distance, the learned perceptual distance when it
can be had offline, and inference timing.

Why a fixed encoder is a fair yardstick even though the default model was trained with the same
encoder family: the evaluation never changes with train.* (encoder, layers, loss weights, image
size), it runs on held-out validation photos at its own resolution, and its losses are relative
errors (0 = the statistics match exactly), so every model, whatever it was trained with, is measured
in the same units, and the unstylized photo gives the baseline on the same scale. It is not an
independent judge of beauty: a model trained on these very features has an advantage, which is why
the stage also reports SSIM and a colour distance, which no training loss optimises.
"""
from __future__ import annotations

import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from skimage.color import rgb2lab
from skimage.metrics import structural_similarity

EVAL_ENCODER = "efficientnet_lite0"
# Sliced Wasserstein: fixed random directions in Lab space, compared at fixed quantiles.
COLOUR_PROJECTIONS = 64
COLOUR_QUANTILES = 128
LPIPS_ALEXNET = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet, which lpips builds on


def eval_dims(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side = short_side and the aspect kept; both multiples of 8 so that a
    network with strided convolutions maps the image back to the same size."""
    scale = short_side / min(width, height)
    return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)


def open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def to_array(img: Image.Image, dims: tuple[int, int]) -> np.ndarray:
    """RGB image -> float32 (H, W, 3) in [0, 1] at exactly dims=(w, h)."""
    if img.size != dims:
        img = img.resize(dims, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img, dtype=np.float32) / 255.0


def to_tensor(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None].to(device)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float32)


def build_eval_encoder(weights_dir: Path, device: torch.device):
    """The fixed evaluation encoder and its default layers: (encoder, style_layers, content_layers)."""
    from models.encoders import build_encoder, default_layers

    style_layers, content_layers = default_layers(EVAL_ENCODER)
    layers = list(dict.fromkeys([*style_layers, *content_layers]))
    encoder = build_encoder(EVAL_ENCODER, layers, weights_dir=weights_dir).to(device).eval()
    return encoder, list(style_layers), list(content_layers)


@torch.no_grad()
def features(encoder, arr: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    return encoder(to_tensor(arr, device))


def grams(feats: dict[str, torch.Tensor], layers: list[str]) -> dict[str, torch.Tensor]:
    from models.losses import gram_matrix

    return {name: gram_matrix(feats[name]) for name in layers}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).sum() / (b**2).sum().clamp_min(1e-12))


def content_loss(result: dict[str, torch.Tensor], content: dict[str, torch.Tensor], layers: list[str]) -> float:
    """Mean over the content layers of ||f(result) - f(content)||^2 / ||f(content)||^2."""
    return float(np.mean([_relative_error(result[n], content[n]) for n in layers]))


def style_loss(image_grams: dict[str, torch.Tensor], style_grams: dict[str, torch.Tensor]) -> float:
    """Mean over the style layers of ||G(image) - G(style)||^2 / ||G(style)||^2: the relative error
    of the image's feature correlations against the style image's (0 = same texture statistics)."""
    return float(np.mean([_relative_error(image_grams[n], style_grams[n]) for n in style_grams]))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two (H, W, 3) [0, 1] images (1 = identical, ~0 = unrelated)."""
    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0))


def lab_pixels(arr: np.ndarray, max_pixels: int = 65536) -> np.ndarray:
    """CIELAB values of (a regular subsample of) the image's pixels, shape (n, 3)."""
    lab = rgb2lab(arr).reshape(-1, 3)
    step = max(1, len(lab) // max_pixels)
    return lab[::step]


def colour_distance(a_lab: np.ndarray, b_lab: np.ndarray) -> float:
    """Sliced Wasserstein-1 distance between two images' colour distributions in CIELAB: the mean,
    over fixed random directions, of how far (in Lab units, ~ delta E) the pixel colours projected on
    that direction must move to match. 0 = same palette in the same proportions; independent of where
    the colours sit in the image."""
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(COLOUR_PROJECTIONS, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    qs = np.linspace(0.0, 1.0, COLOUR_QUANTILES)
    pa = np.quantile(a_lab @ dirs.T, qs, axis=0)
    pb = np.quantile(b_lab @ dirs.T, qs, axis=0)
    return float(np.abs(pa - pb).mean())


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS (a perceptual distance learned from human judgements) can run offline here:
    it needs the `lpips` package and torchvision's AlexNet weights already in the torch hub cache."""
    if importlib.util.find_spec("lpips") is None:
        return False, "the lpips package is not installed"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_ALEXNET
    if not weights.is_file():
        return False, f"AlexNet weights not found at {weights} (no download at run time)"
    return True, "lpips (AlexNet, v0.1)"


def build_lpips(device: torch.device):
    import lpips  # only when lpips_status() said it can load offline

    return lpips.LPIPS(net="alex", verbose=False).to(device).eval()


@torch.no_grad()
def lpips_distance(model, a: np.ndarray, b: np.ndarray, device: torch.device) -> float:
    return float(model(to_tensor(a, device) * 2 - 1, to_tensor(b, device) * 2 - 1).mean())


@torch.no_grad()
def run_network(net, arr: np.ndarray, device: torch.device) -> np.ndarray:
    """Stylize one (H, W, 3) array in-process; the output is brought back to the input size."""
    x = to_tensor(arr, device)
    y = net(x)
    if y.shape[-2:] != x.shape[-2:]:
        y = torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return to_numpy(y)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_inference(net, sizes: list[int], repeats: int, device: torch.device) -> dict[int, float]:
    """Median milliseconds of one forward pass of a size x size RGB image, after one warm-up run."""
    gen = torch.Generator().manual_seed(0)
    timings = {}
    for size in sizes:
        x = torch.rand(1, 3, size, size, generator=gen).to(device)
        net(x)
        _sync(device)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            _sync(device)
            runs.append(time.perf_counter() - start)
        timings[size] = statistics.median(runs) * 1000.0
    return timings
