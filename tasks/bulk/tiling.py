"""Tiled inference for images too large to stylize in one piece.

The image is cut into overlapping tiles of one size (so they batch), each tile is stylized, and
neighbours are cross-faded over the middle of their overlap with linear weights that sum to one.
Two things keep seams invisible:
  - the feed-forward networks use instance norm, whose statistics would otherwise be each tile's
    own (every tile a slightly different colour and contrast): the statistics of every norm layer
    are taken once, from a thumbnail of the whole image or, for a much larger image, a mosaic of
    its own pixels (statistics_image), and applied to all of its tiles (models/shared_stats.py; on
    onnxruntime, models/export.py's tile graphs);
  - the cross-fade stays away from tile edges, where the network sees reflection padding instead
    of the real neighbourhood.
Memory: the uint8 input and output plus one strip of tile rows in float32. Torch-free: the lean
onnxruntime runner (tasks/bulk/lean.py) tiles with it too.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image


STRIDE = 4  # models/johnson/network.py: two stride-2 convs down, two 2x upsamples back
# Tiles per row: a multiple of 2, so that two passes (2 cores' default) finish a row together. A
# constant, not the machine's pass count: the layout must not depend on the machine.
ROW_MULTIPLE = 2
# statistics_image: above MOSAIC_ABOVE x the statistics' side, a mosaic of full-resolution crops of
# MOSAIC_CROP px, at least MOSAIC_MIN_GRID of them along the long side (else the thumbnail)
MOSAIC_ABOVE = 1.5
MOSAIC_CROP = 256
MOSAIC_MIN_GRID = 4


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts, on the stride grid, of the fewest tiles of `tile` that cover `length`
    with at least `overlap` (length and tile are multiples of STRIDE)."""
    if length <= tile:
        return [0]
    n = -(-(length - tile) // (tile - overlap)) + 1
    return [round(i * (length - tile) / (n - 1) / STRIDE) * STRIDE for i in range(n)]


def tile_layout(length: int, max_tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """The tile side and the tiles' starts along one axis: the fewest tiles of at most `max_tile`
    that cover `length` with at least `overlap` (rounded up to a multiple of `multiple`, so that
    that many parallel passes finish a row of tiles together), each as small as that count allows,
    so that as few pixels as possible are computed twice."""
    if length <= max_tile:
        return length, [0]
    n = -(-(length - overlap) // (max_tile - overlap))
    n = -(-n // multiple) * multiple
    tile = -(-(length + (n - 1) * overlap) // n)
    tile = min(-(-tile // STRIDE) * STRIDE, length)
    return tile, tile_starts(length, tile, overlap)


def blend_weights(starts: list[int], tile: int, fade: int) -> list[np.ndarray]:
    """1-D weights per tile, summing to 1 at every position: each boundary cross-fades over `fade`
    pixels centred in the overlap of the two tiles."""
    weights = [np.ones(tile, np.float32) for _ in starts]
    for i in range(len(starts) - 1):
        overlap_start, overlap_end = starts[i + 1], starts[i] + tile
        width = max(1, min(fade, overlap_end - overlap_start))
        begin = (overlap_start + overlap_end - width) // 2  # absolute position of the fade
        ramp = (np.arange(width, dtype=np.float32) + 0.5) / width
        left, right = weights[i], weights[i + 1]
        a = begin - starts[i]
        left[a:a + width] = 1 - ramp
        left[a + width:] = 0
        b = begin - starts[i + 1]
        right[b:b + width] = ramp
        right[:b] = 0
    return weights


def thumbnail(pixels: np.ndarray, long_side: int) -> np.ndarray:
    """The whole image scaled down so its long side is `long_side` (antialiased)."""
    h, w = pixels.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1:
        return pixels
    size = (max(4, round(w * scale)), max(4, round(h * scale)))
    return np.array(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))


def tile_grid(height: int, width: int, tile: int, overlap: int) -> tuple[tuple[int, list[int]], tuple[int, list[int]]]:
    """stylize_tiled's tiles of an image of this size, padded to the stride: (tile height, row
    starts), (tile width, column starts)."""
    return (tile_layout(height + -height % STRIDE, tile, overlap),
            tile_layout(width + -width % STRIDE, tile, overlap, multiple=ROW_MULTIPLE))


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles stylize_tiled cuts an image of this size into."""
    (_, ys), (_, xs) = tile_grid(height, width, tile, overlap)
    return len(ys) * len(xs)


def statistics_image(pixels: np.ndarray, side: int) -> np.ndarray:
    """What a large image's instance-norm statistics are recorded on, at most `side` px long: its
    thumbnail, or, for an image more than MOSAIC_ABOVE times larger, a mosaic of MOSAIC_CROP-px crops
    at the image's own resolution from an even grid over it. A thumbnail that much smaller has other
    statistics than the image itself (its textures finer, its edges sharper); the crops' statistics
    are the image's own, sampled. Against the untiled pass (docs/architecture.md, large images): a
    5640-px photo 28.3 dB with the thumbnail, 40.5 dB with the mosaic, at the same cost."""
    height, width = pixels.shape[:2]
    per_side = side // MOSAIC_CROP
    if max(height, width) <= MOSAIC_ABOVE * side or min(height, width) < MOSAIC_CROP or per_side < MOSAIC_MIN_GRID:
        return thumbnail(pixels, side)
    longest = max(height, width)

    def starts(length: int) -> list[int]:
        """Crops centred in the cells of an even grid along a side, as many as its share of the long side."""
        n = max(1, round(per_side * length / longest))
        return [min(max(round((i + 0.5) * length / n - MOSAIC_CROP / 2), 0), length - MOSAIC_CROP) for i in range(n)]

    rows = [np.concatenate([pixels[y:y + MOSAIC_CROP, x:x + MOSAIC_CROP] for x in starts(width)], 1)
            for y in starts(height)]
    return np.concatenate(rows, 0)


def stylize_tiled(
    pixels: np.ndarray,                               # (H, W, 3) uint8
    run: Callable[[np.ndarray], np.ndarray],          # (N, th, tw, 3) uint8 -> same shape, float in [0,1]
    *, tile: int, overlap: int, batch_size: int,
    map_batches: Callable = map,
) -> np.ndarray:
    """The stylized image as (H, W, 3) uint8. Norm statistics must have been recorded already.
    map_batches(run, batches): a thread pool's map runs a row's tile batches on several cores at
    once (run must then be safe to call concurrently: the recorded statistics are only read).
    run returns an array of its own, writable: it is weighted in place. `tile` is the largest tile
    side; tiles are fitted to the image (tile_layout)."""
    height, width = pixels.shape[:2]
    # Pad to the networks' stride (as their forward does) so that every tile starts on the stride
    # grid of the whole image: a tile off the grid samples differently and shows as a seam.
    pixels = np.pad(pixels, ((0, -height % STRIDE), (0, -width % STRIDE), (0, 0)), mode="reflect")
    h, w = pixels.shape[:2]
    (th, ys), (tw, xs) = tile_grid(h, w, tile, overlap)
    # the fade keeps 3/8 of the overlap away from each tile edge, where padding shows
    wy, wx = blend_weights(ys, th, overlap // 4), blend_weights(xs, tw, overlap // 4)

    def start_row(y: int):
        """The row's results, to be taken in order (a pool's map starts all its passes at once)."""
        tiles = np.stack([pixels[y:y + th, x:x + tw] for x in xs])
        return map_batches(run, [tiles[i:i + batch_size] for i in range(0, len(xs), batch_size)])

    out = np.empty((h, w, 3), np.uint8)
    # Rows [y, y + th) of the current tile row, in float: every row's tops start on the rows the
    # previous one left unfinished (tile rows overlap), so one buffer of th rows is enough.
    strip = np.zeros((th, w, 3), np.float32)
    pending = start_row(ys[0])
    for r, y in enumerate(ys):
        results = [tile for batch in pending for tile in batch]
        if r + 1 < len(ys):
            pending = start_row(ys[r + 1])  # the next row runs while this one is blended
        for c, x in enumerate(xs):
            tile = results[c]
            tile *= (wy[r][:, None] * wx[c][None, :])[..., None]  # (a run's own array: weighted in place)
            strip[:, x:x + tw] += tile
        done = (ys[r + 1] if r + 1 < len(ys) else h) - y  # no later tile row reaches above y + done
        finished = strip[:done]
        finished *= 255
        finished += 0.5
        np.clip(finished, 0, 255, out=finished)
        out[y:y + done] = finished  # (truncated, as astype(uint8) truncates)
        left = th - done
        strip[:left] = strip[done:done + left].copy()
        strip[left:] = 0
    return out[:height, :width]
