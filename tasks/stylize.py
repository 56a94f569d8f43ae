"""Stage `stylize@<style>`: apply a trained network to every held-out image.

Also the engine behind `stylepipe stylize SOURCE --model DIR --out DIR` for any image folder.
Each output is written to a temporary name and renamed into place, so a file with a final name is
always complete; an input that cannot be decoded is skipped and reported, never fatal.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from models.weights import load_model
from stylepipe.config import StylizeParams, load_params
from stylepipe.errors import StageError
from stylepipe.stage import run_main

log = logging.getLogger("stylepipe.stylize")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SAVE_OPTIONS = {"jpg": ("JPEG", "quality"), "webp": ("WEBP", "quality"), "png": ("PNG", None)}


@dataclass
class StylizeSummary:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # input path -> reason
    seconds: float = 0.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("stylize.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def find_images(in_dir: Path) -> list[Path]:
    return sorted(p for p in in_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path, max_size: int | None) -> Image.Image:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    if max_size and max(im.size) > max_size:
        im.thumbnail((max_size, max_size), Image.LANCZOS)
    return im


@torch.inference_mode()
def stylize_image(net: torch.nn.Module, image: Image.Image, device: torch.device) -> Image.Image:
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    y = net(x.to(device)).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((y * 255 + 0.5).astype(np.uint8))


def save_atomic(image: Image.Image, path: Path, fmt: str, quality: int) -> None:
    pil_format, quality_key = SAVE_OPTIONS[fmt]
    options = {quality_key: quality} if quality_key else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, pil_format, **options)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def stylize_folder(model_dir: Path, in_dir: Path, out_dir: Path, params: StylizeParams) -> StylizeSummary:
    """Stylize every image under in_dir into out_dir, keeping the relative tree; <stem>.<format>."""
    out_dir = out_dir.resolve()
    device = pick_device(params.device)
    net, sidecar = load_model(model_dir, device=str(device))
    images = find_images(in_dir)
    log.info("stylizing %d images from %s with %s (%s) on %s", len(images), in_dir, model_dir,
             sidecar.get("style"), device)
    summary = StylizeSummary()
    start = time.perf_counter()
    for path in tqdm(images, desc="stylize", unit="img"):
        target = (out_dir / path.relative_to(in_dir)).with_suffix(f".{params.format}")
        try:
            result = stylize_image(net, load_rgb(path, params.max_size), device)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            summary.failed[str(path)] = f"{type(e).__name__}: {e}"
            log.warning("skipped %s: %s", path, e)
            continue
        save_atomic(result, target, params.format, params.quality)
        summary.written.append(target)
    summary.seconds = time.perf_counter() - start
    log.info("wrote %d images to %s in %.1f s (%d skipped)", len(summary.written), out_dir,
             summary.seconds, len(summary.failed))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.stylize", description=__doc__)
    parser.add_argument("--style", required=True, help="style name from params.yaml `styles`")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_params()
        if args.style not in params.styles:
            raise StageError(f"unknown style {args.style!r}; params.yaml has {sorted(params.styles)}")
        model_dir = Path("data/models") / args.style
        if not (model_dir / "model.json").is_file():
            raise StageError(f"{model_dir} has no trained model: run the train stage first")
        val_dir = Path("data/processed/val")
        if not val_dir.is_dir():
            raise StageError(f"{val_dir} is missing: run the preprocess stage first")
        summary = stylize_folder(model_dir, val_dir, Path("data/stylized") / args.style, params.stylize)
        if summary.failed:
            raise StageError(f"{len(summary.failed)} held-out images could not be stylized: {summary.failed}")

    run_main("stylize", body)


if __name__ == "__main__":
    main()
