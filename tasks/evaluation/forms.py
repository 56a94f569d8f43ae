"""How far the outlines of a stylised output are from its painting's, by their lengths: a first,
partial measure of issue 15's "forms" (a painting's larger structures, beyond palette and texture).

`outline_length_w1(output, painting)`: Canny edges of the luminance at sigma 4 px (structures of
about 8 px and up), thresholds at the 80th/90th percentile of the gradient so that every image gets
the same edge density and only the edges' arrangement counts; the log2 lengths of the 8-connected
edge chains, each weighted by its length; the 1-D Wasserstein (earth mover's) distance between the
output's and the painting's distributions. In octaves: 0 = the same distribution, 1 = the typical
chain an edge pixel belongs to is twice (or half) as long. Both images are taken at one scale:
the output at long side 512 px, the painting at short side 512. Scoring many outputs against one
painting, compute the painting's side once (`painting_outlines`) and pass it to
`outline_distance`.

Read it against the unstylised photo: d(output) / d(photo) is the share of the photo's distance the
stylisation left (0 = outlined like the painting, 1 = no nearer than the photo). It separates
painting-like outlines from photo-like ones, not *which* forms (candy's circles, mosaic's lattice):
another painting is about as near as a published model's output. It means most on photos whose own
outlines differ from the painting's (amber: long smooth contours). It is luminance only, yet not
blind to colour: recolouring a photo to the painting's palette closes 28-54% of its distance. The
parameters were chosen on amber with the four published pytorch/examples models and one udnie model
of ours (docs/style-quality.md, s. 20), then tested unchanged on two more of ours (s. 21).
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.stats import wasserstein_distance
from skimage.feature import canny

SIDE = 512                   # px: the output's long side, the painting's short side
SIGMA = 4.0                  # px at 512 (3 failed on candy; 5-6 put a stylised output near its photo)
QUANTILES = (0.80, 0.90)     # Canny's low and high thresholds, as quantiles of the gradient


def _scaled(rgb: np.ndarray, factor: float) -> np.ndarray:
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    if size == (rgb.shape[1], rgb.shape[0]):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))


def outline_lengths(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log2 lengths in px of the image's edge chains, their weights: the lengths, summing to 1)."""
    luminance = (rgb.astype(float) @ [0.299, 0.587, 0.114]) / 255
    edges = canny(luminance, sigma=SIGMA, low_threshold=QUANTILES[0], high_threshold=QUANTILES[1],
                  use_quantiles=True)
    chains, _ = ndimage.label(edges, np.ones((3, 3)))
    length = np.bincount(chains.ravel())[1:].astype(float)
    length = length[length > 0]
    if length.size == 0:     # a flat image has no outlines: count it as one chain of one pixel
        return np.zeros(1), np.ones(1)
    return np.log2(length), length / length.sum()


def output_outlines(output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`outline_lengths` of an (H,W,3) uint8 RGB output (or photo) at long side SIDE."""
    return outline_lengths(_scaled(output, SIDE / max(output.shape[:2])))


def painting_outlines(painting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`outline_lengths` of an (H,W,3) uint8 RGB painting at short side SIDE."""
    return outline_lengths(_scaled(painting, SIDE / min(painting.shape[:2])))


def outline_distance(output: tuple[np.ndarray, np.ndarray], painting: tuple[np.ndarray, np.ndarray]) -> float:
    """Octaves between two `outline_lengths` results (the 1-D Wasserstein distance)."""
    (a_values, a_weights), (b_values, b_weights) = output, painting
    return float(wasserstein_distance(a_values, b_values, a_weights, b_weights))


def outline_length_w1(output: np.ndarray, painting: np.ndarray) -> float:
    """Distance in octaves between an output's and its painting's outline lengths ((H,W,3) uint8 RGB
    each, at any sizes)."""
    return outline_distance(output_outlines(output), painting_outlines(painting))
