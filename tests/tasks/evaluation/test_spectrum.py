import numpy as np
import pytest

from tasks.evaluation.spectrum import grid_amplitude, grid_ratio, lattice_amplitudes


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


@pytest.mark.parametrize("seed", [0, 1])
def test_grid_amplitude_reads_a_mesh_in_levels_where_the_ratio_cannot_tell_faint_from_strong(seed):
    yy, xx = np.mgrid[0:300, 0:300]
    diagonal = np.cos(2 * np.pi * (xx - yy) / 4)  # a strict period-4 diagonal pattern, amplitude 1
    photo = smooth_noise(300, seed)
    assert grid_amplitude(photo) < 0.5
    assert grid_amplitude(photo + 2.5 * diagonal) == pytest.approx(2.5, abs=0.3)
    # a white sky: the same pattern at a tenth of a level is invisible, yet its ratio is huge
    sky = 250 + 0.3 * smooth_noise(300, seed) / 220
    faint = sky + 0.1 * diagonal
    assert grid_ratio(faint) > 100
    assert grid_amplitude(faint) == pytest.approx(0.1, abs=0.02)
    # the sampled 4-px checkerboard of the test above (rows 1,1,0,0 XOR columns 1,1,0,0) has a
    # diagonal component of half its step
    checker = 3.0 * ((yy % 4 < 2) ^ (xx % 4 < 2))
    assert grid_amplitude(photo + checker) == pytest.approx(1.5, abs=0.3)


def test_lattice_amplitudes_find_any_lattice_locked_pattern_at_its_frequency():
    yy, xx = np.mgrid[0:256, 0:256]
    photo = smooth_noise(256, 3)
    assert lattice_amplitudes(photo).max() < 0.6
    stripes = photo + 2.0 * np.cos(2 * np.pi * xx / 8)          # vertical stripes, period 8
    a = lattice_amplitudes(stripes)
    assert a[0, 1] == pytest.approx(2.0, abs=0.3) and a.max() == a[0, 1]
    assert grid_amplitude(stripes) < 0.6                        # not the (1/4, 1/4) grid
    nyquist = photo + 1.5 * np.cos(np.pi * yy)                  # rows alternating: period 2
    assert lattice_amplitudes(nyquist)[4, 0] == pytest.approx(1.5, abs=0.3)
    # the same pattern drifting off the lattice (period 8.5 px) mostly cancels
    assert lattice_amplitudes(photo + 2.0 * np.cos(2 * np.pi * xx / 8.5)).max() < 1.0
