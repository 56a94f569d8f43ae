"""Tiny training inputs shared by the train tests: smooth 40-px "photos" and a striped "painting"."""
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from stylepipe.config import validate

TINY_TRAIN = dict(network="fast", image_size=32, style_size=48, batch_size=2, steps=6, log_every=2,
                  checkpoint_every=3, lr=0.01)


def tiny_params(**train):
    """Params with one johnson model, `tiny`, on a photos dataset `photos`."""
    return validate({
        "datasets": {"photos": {"kind": "photos", "sources": [{"url": "x"}]}},
        "models": {"tiny": {"family": "johnson", "dataset": "photos", "style": {"url": "y"},
                            "train": {**TINY_TRAIN, **train}}},
    })


def write_photos(folder: Path, count: int) -> Path:
    """Gradients plus a coloured disc, named like preprocess names its outputs."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:40, 0:40]
    for i in range(count):
        img = np.stack([xx * 6, yy * 6, np.full_like(xx, 240 * i // max(count, 1))], -1)
        img[(xx - 8 - 4 * i) ** 2 + (yy - 20) ** 2 < 64] = rng.integers(0, 255, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:016x}.png")
    return folder


def write_painting(path: Path, colour=(250, 200, 20), period: int = 3) -> Path:
    """Diagonal stripes of one colour on near-black."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:40, 0:40]
    stripes = ((xx // period + yy // period) % 2)[..., None] * np.array(colour) + 5
    Image.fromarray(stripes.clip(0, 255).astype(np.uint8)).save(path)
    return path


def write_paintings(folder: Path, train: int = 3, val: int = 1) -> Path:
    """A paintings dataset in preprocess's layout: stripes of different colours and periods."""
    colours = [(250, 200, 20), (20, 120, 240), (230, 40, 90), (60, 200, 90), (240, 240, 240)]
    rows = []
    for i in range(train + val):
        split = "train" if i < train else "val"
        path = write_painting(folder / split / f"{i:016x}.png", colours[i % len(colours)], period=2 + i)
        rows.append({"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "split": split})
    pq.write_table(pa.Table.from_pylist(rows), folder / "manifest.parquet")  # what train checks it against
    return folder


def write_pairs(split_dir: Path, count: int, size: int = 40) -> Path:
    """A translation split in preprocess's layout: A/<name>.png a grey disc, B/<name>.png the same
    disc in colour on a gradient (the same names: pairs)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size]
    for d in "AB":
        (split_dir / d).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cx, cy, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [int(rng.integers(4, size // 4))]
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        a = np.where(disc, 200, 30)[..., None].repeat(3, -1)
        b = np.stack([xx * 5, yy * 5, np.full_like(xx, 90)], -1)
        b[disc] = rng.integers(0, 255, 3)
        name = f"{i:016x}.png"
        Image.fromarray(a.astype(np.uint8)).save(split_dir / "A" / name)
        Image.fromarray(b.clip(0, 255).astype(np.uint8)).save(split_dir / "B" / name)
    return split_dir
