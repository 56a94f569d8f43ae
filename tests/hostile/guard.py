"""Check that a stage wrote nothing outside its data folder."""
from __future__ import annotations

import os
from pathlib import Path


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (mode, size, mtime_ns) for root and everything under it (links not followed)."""
    entries = {str(root): _stat(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            entries[path] = _stat(Path(path))
    return entries


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_mode, st.st_size, st.st_mtime_ns


def changed_outside(before: dict, after: dict, allowed: Path) -> list[str]:
    """Paths created, changed or deleted between two snapshots that are not under `allowed`."""
    changed = {p for p in after if before.get(p) != after[p]} | (before.keys() - after.keys())
    allowed_str = str(allowed)
    return sorted(p for p in changed
                  if p != allowed_str and not p.startswith(allowed_str + os.sep))


def symlinks_under(root: Path) -> list[str]:
    return [os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs
            if os.path.islink(os.path.join(d, n))]
