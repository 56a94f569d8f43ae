"""A trained model folder's two file names, and its sidecar read without torch (the bulk engine's
planning and the CLI read it before, or instead of, building the network: models/weights.py)."""
from __future__ import annotations

import json
from pathlib import Path

from stylepipe.errors import StageError

WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"


def read_sidecar(model_dir: str | Path) -> dict:
    """model_dir's model.json as a dict, else StageError saying why: missing, unreadable, not JSON,
    nested too deeply for the parser (RecursionError: a hostile file), or not a JSON object. Every
    reader goes through here, so no sidecar can crash a caller that handles StageError."""
    path = Path(model_dir) / SIDECAR_FILE
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: no such file; is {model_dir} a trained model folder?") from None
    except OSError as e:
        raise StageError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StageError(f"{path}: not a valid JSON sidecar: {e}") from None
    except RecursionError:
        raise StageError(f"{path}: not a valid JSON sidecar: nested too deeply") from None
    if not isinstance(sidecar, dict):
        raise StageError(f"{path}: the sidecar must be a JSON object")
    return sidecar
