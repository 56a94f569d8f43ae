"""Swapping a finished folder in for a stage's output, shared by download and preprocess."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_folder(new: Path, dest: Path) -> None:
    """Swap `new` in for `dest`. Between the two renames `dest` is briefly absent, never half-full."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = new.with_name(new.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)
