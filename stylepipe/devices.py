"""Where networks run: the device choice and the CPU count, shared by train, stylize, evaluate.
Torch is imported only to pick a device: a job that runs without it (tasks/bulk/lean.py) never
pays for the import."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from stylepipe.errors import StageError

if TYPE_CHECKING:
    import torch


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU. Asking for 'cuda' on a machine without one is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def surely_no_cuda() -> bool:
    """True when no NVIDIA driver is installed here, so `auto` means the CPU, known without
    importing torch; False when there may be one (then pick_device decides)."""
    return not Path("/proc/driver/nvidia").exists() and shutil.which("nvidia-smi") is None


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask, e.g. a container's limit), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
