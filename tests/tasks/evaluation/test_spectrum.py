import numpy as np
import pytest

from tasks.evaluation.spectrum import grid_ratio


def smooth_noise(size: int, seed: int) -> np.ndarray:
    """A 1/f-like random field: the roughly isotropic, falling spectrum of a photo."""
    rng = np.random.default_rng(seed)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / np.maximum(f, 1 / size)
    field = np.real(np.fft.ifft2(spectrum))
    return (field - field.min()) / (field.max() - field.min()) * 200 + 20


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_natural_spectrum_has_no_grid_and_a_4_pixel_mesh_is_found(seed):
    image = smooth_noise(256, seed)
    assert grid_ratio(image) < 3
    yy, xx = np.mgrid[0:256, 0:256]
    mesh = 3.0 * ((yy % 4 < 2) ^ (xx % 4 < 2))  # a faint 4-px checkerboard, 3/255
    assert grid_ratio(image + mesh) > 20
    # the same mesh with period 2 does not count as a period-4 grid
    assert grid_ratio(image + 3.0 * ((yy % 2) ^ (xx % 2))) < 3


def test_colour_and_odd_sizes_and_the_crop():
    rgb = np.stack([smooth_noise(203, 5)] * 3, -1)  # sides not multiples of 4
    assert grid_ratio(rgb) == pytest.approx(grid_ratio(rgb[..., 0]))
    big = smooth_noise(512, 6)
    assert grid_ratio(big) == grid_ratio(big[128:384, 128:384])  # the centre 256 px are measured
    with pytest.raises(ValueError, match="too small"):
        grid_ratio(np.zeros((10, 40)))
