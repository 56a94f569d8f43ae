"""Does a style network see colour? (issue 15: "colour-blind networks")

colour_response(stylize, image): the photo and its grayscale copy (luminance, replicated to three
channels) both go through `stylize`; returns the mean absolute difference, in /255, between the two
inputs and between the two outputs. A network that recolours by brightness alone gives nearly the
same output for both (output difference much below the input difference): a blue sky and a red
bridge of the same brightness come out the same colour.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def grayscale_copy(image: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 -> the same, every channel the ITU-R 601 luminance."""
    y = np.asarray(image, dtype=np.float64)[..., :3] @ np.array([0.299, 0.587, 0.114])
    return np.repeat(np.clip(y + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def colour_response(stylize: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> tuple[float, float]:
    """(input difference, output difference), both mean |a - b| in 0-255 units; `stylize` maps an
    (H,W,3) uint8 image to an (H,W,3) uint8 image."""
    gray = grayscale_copy(image)
    return mean_abs_diff(image, gray), mean_abs_diff(stylize(image), stylize(gray))
