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


MAX_CLASSES = 100_000  # a conditional generator's classes: a sidecar asking for more describes no model of ours
DIRECTIONS = ("a2b", "b2a")


def directions(sidecar: dict) -> list[str]:
    """A translation model's directions as its sidecar lists them (["a2b"] where it lists none), else
    StageError: the value is a hostile file's to choose."""
    value = sidecar.get("directions") or ["a2b"]
    if not isinstance(value, list) or not all(isinstance(d, str) and d in DIRECTIONS for d in value):
        raise StageError(f"the sidecar's directions must be a list of {' and '.join(DIRECTIONS)}, not {str(value)[:80]}")
    return value


def num_classes(sidecar: dict) -> int:
    """A conditional generator's number of classes (0 where the sidecar names none), else StageError."""
    value = sidecar.get("num_classes") or 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CLASSES:
        raise StageError(f"the sidecar's num_classes must be a whole number from 0 to {MAX_CLASSES}, not {str(value)[:80]}")
    return value
