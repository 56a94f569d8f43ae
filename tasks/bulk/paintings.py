"""A painting per input for an AdaIN job: `stylepipe stylize SRC --model M --style-manifest FILE`.

FILE is a CSV with the header `input,painting`, then a row per input:
- input: the name the job lists the input under, as `stylepipe ledger` shows it (a path relative
  to the source folder, an archive member's name, an object's key below the URL);
- painting: an image file, absolute or relative to the manifest's folder.

An input the manifest does not name gets the job's `--adain-style` paintings; with none, it fails
with `no-painting`. A painting that is missing or does not decode fails the inputs it was named
for (`no-painting`, with the painting's own reason), not the job. A manifest that cannot be read
or has a malformed row stops the job before anything runs: it is configuration, not an input.
Torch-free: jobs are planned without torch."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from stylepipe.config import DEFAULT_MAX_PIXELS
from stylepipe.errors import StageError
from tasks.data.images import Rejected, decode, max_input_bytes

HEADER = ["input", "painting"]
MAX_PAINTING_PIXELS = DEFAULT_MAX_PIXELS


@dataclass
class PaintingManifest:
    paintings: dict[str, str]                           # input name -> painting path
    checked: dict[str, tuple[str, str]] = field(default_factory=dict)  # painting -> (sha256, "") or ("", why)

    @classmethod
    def read(cls, path: str | Path) -> PaintingManifest:
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise StageError(f"--style-manifest {path}: cannot read it: {e}") from None
        if not rows or [c.strip() for c in rows[0]] != HEADER:
            raise StageError(f"--style-manifest {path}: the first line must be the header 'input,painting'")
        paintings: dict[str, str] = {}
        for line, row in enumerate(rows[1:], start=2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != 2 or not row[0] or not row[1].strip():
                raise StageError(f"--style-manifest {path}, line {line}: expected 'input,painting', got {row!r}")
            name, painting = row[0], str(path.parent / row[1].strip())  # an absolute painting stays as it is
            if paintings.get(name, painting) != painting:
                raise StageError(f"--style-manifest {path}, line {line}: {name!r} is given two paintings")
            paintings[name] = painting
        return cls(paintings)

    def painting_of(self, name: str) -> str | None:
        return self.paintings.get(name)

    def check(self, painting: str) -> tuple[str, str]:
        """(sha256, "") for a painting that decodes, ("", why) for one that does not; each painting
        is read once per job."""
        if painting not in self.checked:
            self.checked[painting] = _check(Path(painting))
        return self.checked[painting]


def _check(path: Path) -> tuple[str, str]:
    try:
        if not path.is_file():
            return "", f"{path}: no such file" if not path.exists() else f"{path}: not a regular file"
        if path.stat().st_size > max_input_bytes(MAX_PAINTING_PIXELS):
            return "", f"{path}: too large"
        data = path.read_bytes()
    except OSError as e:
        return "", f"{path}: cannot read: {e.strerror or e}"
    try:
        decode(data, MAX_PAINTING_PIXELS)
    except Rejected as e:
        return "", f"{path}: {e}"
    return hashlib.sha256(data).hexdigest(), ""
