"""`stylepipe gatys CONTENT STYLE --out OUT.png`: one photo after one painting, by optimisation
(models/gatys/optimize.py), written atomically. Also the image reading shared with the Gatys mode of bulk
stylize (tasks/bulk/runners.py)."""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from models.gatys.optimize import GatysConfig, Level, build_gatys_encoder, gatys
from stylepipe.devices import pick_device
from stylepipe.config import StylizeParams
from stylepipe.errors import StageError
from tasks.data.datasets import read_image

# as `stylepipe stylize --max-pixels`: larger images are refused as bombs
MAX_PIXELS = StylizeParams.model_fields["max_pixels"].default


def parse_sizes(text: str) -> tuple[int, ...]:
    """'256,512' -> (256, 512); the values are checked by GatysConfig."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise StageError(f"sizes {text!r}: expected whole numbers separated by commas, e.g. 256,512") from None


def output_format(out: Path) -> str:
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt not in ("PNG", "JPEG", "WEBP"):
        raise StageError(f"{out}: unsupported output type {out.suffix or '(none)'}; use .png, .jpg or .webp")
    return fmt


def write_image(image: torch.Tensor, out: Path) -> None:
    """(1,3,H,W) or (3,H,W) in [0,1] -> `out`, under a temporary name in the same folder first, then
    renamed: `out` only ever holds a complete file."""
    fmt = output_format(out)
    pixels = (image.reshape(-1, *image.shape[-2:]).permute(1, 2, 0) * 255 + 0.5).clamp(0, 255)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(
            tmp, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StageError(f"{out}: cannot write: {e.strerror or e}") from None


def describe_level(i: int, n: int, level: Level) -> str:
    f = level.final
    return (f"level {i + 1}/{n}: {level.shape[1]}x{level.shape[0]} px, {level.evaluations} evaluations, "
            f"{level.seconds:.1f} s, loss {f['total']:.4g} (content {f['content']:.4g}, style "
            f"{f['style']:.4g}, tv {f['tv']:.4g})")


def run_gatys(content_path: str | Path, style_path: str | Path, out: str | Path, config: GatysConfig, *,
              device: str = "auto", report: Callable[[str], None] = print) -> list[Level]:
    """Read both images, optimise, write `out`; every input is checked before the optimisation."""
    out = Path(out)
    output_format(out)
    if not out.parent.is_dir():
        raise StageError(f"{out.parent}: no such folder")
    content, style = read_image(content_path), read_image(style_path)
    torch_device = pick_device(device)
    started = time.perf_counter()
    encoder = build_gatys_encoder(config, torch_device)
    n = len(config.sizes)
    result = gatys(content, style, config, encoder=encoder, device=torch_device,
                   on_level=lambda i, level: report(describe_level(i, n, level)))
    write_image(result.image, out)
    h, w = result.image.shape[-2:]
    report(f"wrote {out} ({w}x{h}) in {time.perf_counter() - started:.1f} s on {torch_device}")
    return result.levels
