"""Train one model per painting in a folder, then draw their results on held-out photos in a grid.

    stylepipe styles PAINTINGS_FOLDER [--out data/style-grid] [--steps 400]

For trying out new styles before they join params.yaml (where `dvc repro` would train them in
the pipeline). Uses the pipeline's preprocessed photos (data/processed/train for training,
data/processed/val as the held-out photos, brought up to date with `dvc repro preprocess`) and
the `train` section of params.yaml. Writes, under --out:

  <name>/model.safetensors, <name>/model.json   the trained model (name: the file's stem)
  <name>/loss.tsv                              its loss curve
  grid.png                                     photos down, paintings across, training times
  summary.json                                 per style: painting, seconds, final losses

A model whose sidecar matches (same painting, data and train params) is kept, not retrained; an
interrupted run resumes from its checkpoint (--fresh discards checkpoints). A painting that cannot
be used (unreadable, too large, a refused resume) is reported in summary.json and skipped; the
command then exits 1.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.sidecar import WEIGHTS_FILE, read_sidecar
from models.weights import load_model
from stylepipe.config import ModelParams, Params
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file
from stylepipe.stage import dvc_command, stage_env
from tasks.data.images import IMAGE_SUFFIXES, STYLE_IMAGE_MAX_PIXELS, Rejected, decode
from tasks.data.datasets import files_sha256, list_train_images, load_rgb, to_tensor
from tasks.train import RUN_ONLY, Paths, ResumeRefused, train

log = logging.getLogger("stylepipe.styles")

GRID_CELL = 256  # px: the long side of each picture in the grid


@dataclass
class TrainedStyle:
    name: str
    painting: Path
    model_dir: Path
    seconds: float
    reused: bool
    final_losses: dict


def style_name(path: Path) -> str:
    # no dots: a name never collides with grid.png or summary.json beside the model folders
    return re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-") or "style"


def find_paintings(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder}: not a folder of style images")
    paintings = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paintings:
        raise StageError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    names = [style_name(p) for p in paintings]
    clashes = {n for n in names if names.count(n) > 1}
    if clashes:
        raise StageError(f"{folder}: several paintings map to the same name: {', '.join(sorted(clashes))}")
    return paintings


def template_model(params: Params) -> tuple[str, ModelParams]:
    """The first johnson model of params.yaml: its dataset and train settings serve every painting."""
    for name, m in params.models.items():
        if m.family == "johnson":
            return name, m
    raise StageError("params.yaml has no johnson model whose settings the paintings could be trained with")


def ensure_preprocessed(repo_root: Path, dataset: str) -> None:
    """`dvc repro preprocess@<dataset>`: a no-op (about a second) when it is up to date."""
    result = subprocess.run(dvc_command("repro", f"preprocess@{dataset}"), cwd=repo_root, env=stage_env(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StageError(f"dvc repro preprocess failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def is_current(model_dir: Path, template: ModelParams, painting_sha: str, data_sha: str) -> dict | None:
    """The sidecar of a finished model trained exactly as asked, else None."""
    try:
        sidecar = read_sidecar(model_dir)
    except StageError:
        return None
    wanted = {"family": "johnson", "style_image_sha256": painting_sha, "train_data_sha256": data_sha,
              "train": template.train.model_dump(exclude=RUN_ONLY)}
    ok = all(sidecar.get(k) == v for k, v in wanted.items()) and (model_dir / WEIGHTS_FILE).is_file()
    return sidecar if ok else None


def check_painting(painting: Path) -> None:
    """The painting decodes within the style-image limit (tasks/data/images.py's rules: bombs and
    truncated files refused), else StageError."""
    try:
        decode(painting.read_bytes(), STYLE_IMAGE_MAX_PIXELS, setting="the style-image limit")
    except OSError as e:
        raise StageError(f"{painting}: cannot read: {e}") from None
    except Rejected as e:
        raise StageError(f"{painting}: not a usable image ({e})") from None


def train_styles(paintings: list[Path], params: Params, out: Path, data_dir: Path,
                 checkpoints: Path = Path(".cache/checkpoints"), fresh: bool = False,
                 ) -> tuple[list[TrainedStyle], dict[str, str]]:
    """Train (or keep) a model per painting with the template model's settings (template_model);
    returns the trained styles and, per painting that failed, why. One painting failing never
    stops the others. data_dir: the processed photo dataset (train/, val/)."""
    _, template = template_model(params)
    data_sha = files_sha256(list_train_images(data_dir / "train"))
    trained, failed = [], {}
    for i, painting in enumerate(paintings, 1):
        name = style_name(painting)
        model_dir = out / name
        try:
            check_painting(painting)
            sidecar = is_current(model_dir, template, sha256_file(painting), data_sha)
            reused = sidecar is not None
            if reused:
                log.info("[%d/%d] %s: already trained (%s), kept", i, len(paintings), name, model_dir)
            else:
                log.info("[%d/%d] %s: training on %s", i, len(paintings), name, painting)
                entry = template.model_copy(update={"style": {"url": str(painting)}})
                style_params = params.model_copy(update={"models": {name: entry}})
                paths = Paths(data_dir, out / name, model_dir, model_dir / "loss.tsv", checkpoints / f"styles-{name}")
                sidecar = train(style_params, name, paths, style_image=painting, fresh=fresh, keep_seconds=True)
        except ResumeRefused as e:
            failed[str(painting)] = f"{e} (here: re-run `stylepipe styles` with --fresh)"
        except StageError as e:
            failed[str(painting)] = str(e)
        else:
            trained.append(TrainedStyle(name, painting, model_dir, sidecar["seconds"], reused,
                                        sidecar.get("final_losses", {})))
            continue
        log.error("skipping %s: %s", painting, failed[str(painting)])
    return trained, failed


def fit(img: Image.Image, size: int = GRID_CELL) -> Image.Image:
    scale = size / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)


@torch.inference_mode()
def stylize_photo(net: torch.nn.Module, photo: Image.Image) -> np.ndarray:
    y = net(to_tensor(photo)[None])[0]
    return (y.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def render_grid(trained: list[TrainedStyle], photos: list[Path], out_png: Path) -> None:
    """Row 0: the paintings with name and training time; then one row per photo: the photo, then
    its result under each style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = [load_model(t.model_dir)[0] for t in trained]
    inputs = [fit(load_rgb(p)) for p in photos]
    rows, cols = 1 + len(inputs), 1 + len(trained)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0][0].text(0.5, 0.5, "held-out photo\n\u2193   style \u2192", ha="center", va="center", fontsize=11)
    for j, t in enumerate(trained, 1):
        axes[0][j].imshow(fit(load_rgb(t.painting)))
        axes[0][j].set_title(f"{t.name}\ntrained in {t.seconds:.0f} s", fontsize=10)
    for i, photo in enumerate(inputs, 1):
        axes[i][0].imshow(photo)
        for j, net in enumerate(nets, 1):
            axes[i][j].imshow(stylize_photo(net, photo))
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_png.parent, prefix=".grid.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out_png)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def held_out_photos(val_dir: Path, count: int) -> list[Path]:
    photos = sorted(p for p in Path(val_dir).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise StageError(f"no held-out photos in {val_dir}; run the preprocess stage first")
    return photos[:count]


def run(folder: Path, params: Params, out: Path, repo_root: Path = Path("."), photos: int = 4,
        fresh: bool = False) -> dict:
    paintings = find_paintings(folder)
    _, template = template_model(params)
    ensure_preprocessed(repo_root, template.dataset)
    processed = repo_root / "data" / "processed" / template.dataset
    trained, failed = train_styles(paintings, params, out, processed,
                                   repo_root / ".cache" / "checkpoints", fresh=fresh)
    if not trained:
        raise StageError("no style could be trained:\n" + "\n".join(f"  {p}: {why}" for p, why in failed.items()))
    render_grid(trained, held_out_photos(processed / "val", photos), out / "grid.png")
    summary = {"grid": str(out / "grid.png"), "styles": [
        {"name": t.name, "painting": str(t.painting), "model": str(t.model_dir), "seconds": t.seconds,
         "reused": t.reused, "final_losses": t.final_losses} for t in trained], "failed": failed}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
