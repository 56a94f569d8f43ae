"""Helpers shared by the stylize tests (no tests here): small generated photos, a small real
network with untrained (seeded random) weights, and ledger queries."""
from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylepipe.config import StylizeParams
from tasks.bulk.plan import Job, ModelSpec, default_ledger


def photo(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A smooth gradient with a few blobs: structured like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 1 - x / width], -1) * 200 + 20
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, 20)
        base[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def encoded(img: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def make_photos(folder: Path, names: list[str], size: tuple[int, int] = (96, 64)) -> list[str]:
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {"png": "PNG", "webp": "WEBP"}.get(name.rsplit(".", 1)[-1], "JPEG")
        path.write_bytes(encoded(photo(*size, seed=i), fmt))
    return names


def save_random_model(folder: Path, network: str = "fast", seed: int = 0) -> Path:
    import torch

    from models.johnson.network import DEFAULT_UPSAMPLE, build_network
    from models.weights import save_model

    torch.manual_seed(seed)
    save_model(folder, build_network(network), {"network": network, "upsample": DEFAULT_UPSAMPLE[network],
                                                        "style": folder.name, "steps": 0})
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def other_model(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("models") / "other", seed=1)


def make_job(source, out: Path, *models: Path | ModelSpec, **params) -> Job:
    settings = {"max_size": None, "workers": 0, "batch_size": 2, "max_failed_fraction": 1.0, **params}
    specs = tuple(m if isinstance(m, ModelSpec) else ModelSpec(str(m)) for m in models)
    return Job(str(source), out, specs, StylizeParams(**settings), default_ledger(out))


def ledger_rows(ledger: Path) -> list[dict]:
    db = sqlite3.connect(ledger)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM items ORDER BY relpath, model")]
    finally:
        db.close()


def output_files(out: Path) -> list[str]:
    """Everything under out except the ledger folder, '/'-separated."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and ".stylepipe" not in p.relative_to(out).parts)


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001
        return False
