"""Where networks run: the device choice and the CPU count, shared by train, stylize, evaluate."""
import os

import torch

from stylepipe.errors import StageError


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU. Asking for 'cuda' on a machine without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask, e.g. a container's limit), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
