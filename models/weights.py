"""A trained model on disk: model.safetensors (the state dict) + model.json (the sidecar).

Only safetensors is ever loaded: a pickle (.pt/.pth) can run code on load, and model directories
may come from elsewhere (a DVC remote, a colleague)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models import registry
from models.sidecar import SIDECAR_FILE, WEIGHTS_FILE, read_sidecar
from stylepipe.errors import StageError


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model_dir: Path, net: nn.Module, sidecar: dict) -> None:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    text = json.dumps(sidecar, indent=2, sort_keys=True) + "\n"
    # weights first: a sidecar never describes weights that are not there yet
    _atomic_write(model_dir / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    _atomic_write(model_dir / SIDECAR_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def load_model(model_dir: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    model_dir = Path(model_dir)
    weights, sidecar_path = model_dir / WEIGHTS_FILE, model_dir / SIDECAR_FILE
    for path in (weights, sidecar_path):
        if not path.is_file():
            others = sorted(p.name for p in model_dir.glob("*.pt*")) if model_dir.is_dir() else []
            hint = f" (found {', '.join(others)}: pickled checkpoints are never loaded)" if others else ""
            raise StageError(f"{path}: no such file{hint}; run the train stage for this style")
    sidecar = read_sidecar(model_dir)
    family = sidecar.get("family", "johnson")  # sidecars from before families existed are johnson's
    try:
        net = registry.load(family).build(sidecar)
    except (KeyError, ValueError, TypeError) as e:
        raise StageError(f"{sidecar_path}: cannot rebuild the {family!r} network: {e}") from None
    try:
        state = load_file(weights, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise StageError(
            f"{weights}: not a safetensors file ({e}); only safetensors weights are loaded, "
            "never pickles (.pt/.pth) - retrain or convert the model"
        ) from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise StageError(f"{weights}: does not match the {family!r} network its sidecar describes: {e}") from None
    return net.to(device).eval(), sidecar
