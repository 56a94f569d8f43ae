"""Flat clipped regions: areas where an image is pinned to the edge of what 8 bits hold.

A trained style network can drive a region past black or white: its output sigmoid saturates (the
loss's gradient there is ~1e-6 of its largest and the region never comes back). That region comes
out as one flat colour, with the painting's texture gone: pure black holes, white discs, yellow
glows (docs/style-quality.md, sections 14 and 15).

clipped_share(image) is the share of pixels in such regions: in some channel, within LEVELS of 0
or 255, over an area that a SIDE x SIDE square fits inside (a morphological opening, per channel),
so that thin dark outlines, highlights and specks do not count. Measured at 512 px (section 15):
the five content photos 0.44% on average, the eight paintings 0.13%, the published Johnson
models' outputs 0.00%; the classic network trained with the larger-forms recipe at Adam's 2e-3
2.3-11.3%, at 1e-3 0.3-2.6% (sections 15 and 16).
"""
from __future__ import annotations

import numpy as np

LEVELS = 2   # 0-2 and 253-255 count as clipped
SIDE = 7     # px: the smallest square a region must hold


def _window_sums(a: np.ndarray, k: int) -> np.ndarray:
    """Sums over every k x k window lying inside `a` (H,W) -> (H-k+1, W-k+1)."""
    c = np.cumsum(np.pad(a, ((1, 0), (0, 0))), axis=0)
    rows = c[k:] - c[:-k]
    c = np.cumsum(np.pad(rows, ((0, 0), (1, 0))), axis=1)
    return c[:, k:] - c[:, :-k]


def opening(mask: np.ndarray, side: int = SIDE) -> np.ndarray:
    """The pixels of `mask` (H,W bool) covered by some side x side square lying wholly in it."""
    h, w = mask.shape
    if h < side or w < side:
        return np.zeros_like(mask, dtype=bool)
    fits = _window_sums(mask.astype(np.int32), side) == side * side   # square anchored at its top left
    anchors = np.pad(fits.astype(np.int32), side - 1)                 # (H+side-1, W+side-1)
    return _window_sums(anchors, side) > 0


def clipped_share(image: np.ndarray, levels: int = LEVELS, side: int = SIDE) -> float:
    """(H,W,3) or (H,W) uint8 -> the share of pixels in flat clipped regions, 0 to 1."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"clipped_share takes uint8 pixels, got {a.dtype}")
    channels = [a] if a.ndim == 2 else [a[..., c] for c in range(min(3, a.shape[-1]))]
    clipped = np.zeros(a.shape[:2], dtype=bool)
    for ch in channels:
        clipped |= opening(ch <= levels, side) | opening(ch >= 255 - levels, side)
    return float(clipped.mean())
