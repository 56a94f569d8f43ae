"""A periodic grid in an image, measured in its power spectrum (issue 15's 4-pixel mesh).

grid_ratio(image, period=4) is the power at (1/period, 1/period) cycles/pixel (both diagonal
directions, both signs) divided by the mean power of the ring of the same radial frequency around
it. A natural photo or a painting has a smooth, roughly isotropic spectrum there: the ratio is
about 1 (measured 0.5-1.8 on photos and paintings). An upsampling layer that is not shift-equivariant
(a pixel shuffle from stride 4, or nearest upsampling twice) stamps a period-4 pattern into the
output, a spike at exactly that frequency: ratios of 5 to hundreds.

The ratio has a blind spot: in a nearly flat crop (a white sky) the ring holds almost no power, so a
spike far too faint to see still gives a large ratio. grid_amplitude(image) says how strong the
period is in absolute terms: the amplitude, in the image's own units (levels of 255), of the
strict period-4 diagonal pattern over the same crop (lattice_amplitudes: any pattern locked to
the pixel lattice). The published Johnson models' meshes, visible at 1:1, are 2.3-5.0 levels;
paintings and photos 0.01-0.37 (docs/style-quality.md, section 11).

The centre CROP x CROP pixels are measured (see CROP). They are converted to luminance, its mean removed and a 2-D Hann window applied, so the edges
of the picture (a step at the border of a periodic FFT) do not leak power across the spectrum.
"""
from __future__ import annotations

import numpy as np

RING_HALF_WIDTH = 0.02   # cycles/pixel either side of the target radius
# A strict period puts all its power in one bin whatever the image size, while the ring's power per
# bin falls as the pixels grow: the ratio of a gridded image grows with its area. Measuring one
# centre crop of a fixed size makes a 1080-px reference and a 512-px output comparable.
CROP = 256
PEAK_EXCLUSION = 2       # FFT bins around each target peak left out of the ring


def luminance(image: np.ndarray) -> np.ndarray:
    """(H,W), (H,W,3) uint8 or float -> (H,W) float64 in the image's own units."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
    return a


def power_spectrum(image: np.ndarray) -> np.ndarray:
    """Centred power spectrum (fftshift) of the windowed, mean-removed luminance."""
    y = luminance(image)
    h, w = y.shape
    y = (y - y.mean()) * np.outer(np.hanning(h), np.hanning(w))
    return np.abs(np.fft.fftshift(np.fft.fft2(y))) ** 2


def measured_luminance(image: np.ndarray, period: int, crop: int | None) -> np.ndarray:
    """The luminance of the centre crop x crop pixels (None: the whole image), its sides cut to a
    multiple of the period so that the period's frequencies fall on DFT bins."""
    y = luminance(image)
    if crop is not None:
        top, left = max(0, (y.shape[0] - crop) // 2), max(0, (y.shape[1] - crop) // 2)
        y = y[top:top + crop, left:left + crop]
    h, w = y.shape
    if min(h, w) < 4 * period:
        raise ValueError(f"image {w}x{h} is too small to measure a period of {period} px")
    return y[:h - h % period, :w - w % period]


def lattice_amplitudes(image: np.ndarray, period: int = 8, crop: int | None = CROP) -> np.ndarray:
    """(period, period) array: [i, j] is the amplitude, in the image's units, of the pattern
    A*cos(2*pi*(i*y + j*x)/period) locked to the pixel lattice in the centre crop ([0, 0] is 0).
    It is the DFT of the crop's polyphase means (the mean of every pixel at each position modulo
    `period`), which equals the whole crop's DFT at those frequencies: a mesh that repeats with the
    lattice adds up coherently, texture whose phase wanders mostly cancels. So does a long straight
    edge along a row, a column or (for the diagonal frequencies) a 45-degree line: compare with the
    photo's own value."""
    y = measured_luminance(image, period, crop)
    h, w = y.shape
    means = y.reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    amplitudes = 2 * np.abs(np.fft.fft2(means - means.mean())) / period**2
    half = [0, period // 2] if period % 2 == 0 else [0]
    amplitudes[np.ix_(half, half)] /= 2    # those frequencies are their own conjugate: no mirror bin
    return amplitudes


def grid_amplitude(image: np.ndarray, crop: int | None = CROP) -> float:
    """The (1/4, +-1/4) cycles/pixel pattern's amplitude (the grid of grid_ratio), in levels."""
    a = lattice_amplitudes(image, 4, crop)
    return float(max(a[1, 1], a[1, 3]))


def grid_ratio(image: np.ndarray, period: int = 4, crop: int | None = CROP) -> float:
    """Power at (+-1/period, +-1/period) cycles/pixel over the mean power of its ring (see the module
    docstring), in the centre crop x crop pixels (None: the whole image). Needs sides >= 4 * period."""
    y = measured_luminance(image, period, crop)
    h, w = y.shape
    p = power_spectrum(y)
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    f0 = 1.0 / period
    radius = np.hypot(fy, fx)
    ring = np.abs(radius - np.hypot(f0, f0)) <= RING_HALF_WIDTH
    cy, cx = h // 2, w // 2
    peaks = []
    for sy in (1, -1):
        for sx in (1, -1):
            iy, ix = cy + round(sy * f0 * h), cx + round(sx * f0 * w)
            if not (0 <= iy < h and 0 <= ix < w):
                continue
            peaks.append(p[iy, ix])
            ring[max(0, iy - PEAK_EXCLUSION):iy + PEAK_EXCLUSION + 1,
                 max(0, ix - PEAK_EXCLUSION):ix + PEAK_EXCLUSION + 1] = False
    background = p[ring].mean()
    return float(np.mean(peaks) / background) if background > 0 else float("inf")
