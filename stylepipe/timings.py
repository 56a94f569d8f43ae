"""metrics/timings.json: how long things took on this machine (training seconds, inference ms per
image). Measurements of a machine, not results: kept apart from the DVC-tracked outputs, whose
bytes must be the same on every machine (a fresh clone's `dvc repro` must reproduce dvc.lock). The
file is git-ignored and no stage declares it; `dvc metrics show metrics/timings.json` reads it, and
the Prefect flow publishes it as the `stylepipe-timings` artifact."""
from __future__ import annotations

import json
import os
from pathlib import Path

TIMINGS = Path("metrics/timings.json")


def read(path: Path = TIMINGS) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(name: str, values: dict, path: Path = TIMINGS) -> None:
    """Merge `values` into the entry `name` (a model) and write the file atomically."""
    path = Path(path)
    data = read(path)
    data[name] = {**data.get(name, {}), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
