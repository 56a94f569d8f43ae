"""The 4-pixel grid (issue 15), measured: tasks/evaluation/spectrum.py's grid_ratio (power at
(1/4,1/4) cycles/pixel over its ring, on the centre 256x256) and grid_amplitude (the same pattern's
strength in levels of 255, which a nearly flat crop cannot inflate) of
  - image folders as they are (photos, paintings, published models' outputs): --images DIR ...
  - trained stylepipe models' outputs on photos at --size: --models MODEL_DIR ... --photos DIR
and, with --time, the forward time of one --size x --size image for every fast/classic decoder
variant, measured in the same run (random weights: the time does not depend on training).

    OMP_NUM_THREADS=1 python benchmarks/grid_spectrum.py --images ../shared/images/style \\
        ../shared/images/content ../shared/images/reference \\
        --models data/models/swirls --photos ../shared/images/content --size 512 --time
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tasks.evaluation.spectrum import grid_amplitude, grid_ratio

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SUFFIXES)


def fit(img: Image.Image, long_side: int) -> Image.Image:
    scale = long_side / max(img.size)
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)


@torch.inference_mode()
def stylize(net, img: Image.Image) -> np.ndarray:
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(255)
    y = net(x)[0].permute(1, 2, 0).mul(255).add(0.5).clamp(0, 255).byte().numpy()
    return y


@torch.inference_mode()
def forward_seconds(net, size: int, repeats: int) -> float:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    net(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="*", default=[], type=Path, help="folders measured as they are")
    parser.add_argument("--models", nargs="*", default=[], type=Path, help="trained model folders")
    parser.add_argument("--photos", type=Path, help="photos the models stylize")
    parser.add_argument("--size", type=int, default=512, help="long side the photos are stylized at")
    parser.add_argument("--time", action="store_true", help="time every decoder variant at --size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))

    for folder in args.images:
        arrays = {p.name: np.asarray(Image.open(p).convert("RGB")) for p in images_in(folder)}
        ratios = {n: grid_ratio(a) for n, a in arrays.items()}
        amplitudes = {n: grid_amplitude(a) for n, a in arrays.items()}
        print(f"{folder} (ratio / amplitude): " + ", ".join(f"{n} {ratios[n]:.2f} / {amplitudes[n]:.3f}" for n in arrays)
              + f"  [ratio {min(ratios.values()):.2f}-{max(ratios.values()):.2f}, "
              f"amplitude {min(amplitudes.values()):.3f}-{max(amplitudes.values()):.3f} levels]")

    if args.models:
        from models.weights import load_model

        photos = images_in(args.photos)
        for model_dir in args.models:
            net, sidecar = load_model(model_dir)
            outputs = [stylize(net, fit(Image.open(p).convert("RGB"), args.size)) for p in photos]
            ratios, amplitudes = [grid_ratio(o) for o in outputs], [grid_amplitude(o) for o in outputs]
            print(f"{model_dir} ({sidecar.get('network')}, upsample {sidecar.get('upsample', 'pre-option')}) "
                  f"on {len(photos)} photos at {args.size} px (ratio / amplitude): "
                  + ", ".join(f"{r:.2f} / {a:.3f}" for r, a in zip(ratios, amplitudes))
                  + f"  [ratio {min(ratios):.2f}-{max(ratios):.2f}, amplitude {min(amplitudes):.3f}-{max(amplitudes):.3f} levels]")

    if args.time:
        from models.johnson.network import build_network, flops_per_pixel

        for name, upsample in [("fast", "pixelshuffle"), ("fast", "bilinear"), ("fast", "antialiased"), ("fast", "nearest"),
                               ("slim", "bilinear"), ("slim", "antialiased"), ("classic", "nearest")]:
            torch.manual_seed(0)
            net = build_network(name, upsample).eval()
            seconds = forward_seconds(net, args.size, args.repeats)
            print(f"forward {name}/{upsample} at {args.size}x{args.size}: {seconds:.3f} s "
                  f"(median of {args.repeats}), {flops_per_pixel(name, 128, upsample) / 1e3:.1f} kFLOP/pixel")


if __name__ == "__main__":
    main()
