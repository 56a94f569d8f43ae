import numpy as np
from PIL import Image

from tasks.evaluation.forms import outline_length_w1, outline_lengths


def discs(radius: int, seed: int, side: int = 512) -> np.ndarray:
    """Flat discs of one radius, random colours, on a textured grey ground: the forms are the discs."""
    rng = np.random.default_rng(seed)
    img = rng.integers(110, 146, (side, side, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:side, :side]
    step = 2 * radius + max(4, radius // 2)
    for cy in range(radius + 2, side - radius - 2, step):
        for cx in range(radius + 2, side - radius - 2, step):
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = rng.integers(0, 256, 3)
    return img


def mean_octave(image: np.ndarray) -> float:
    log2_lengths, weights = outline_lengths(image)
    return float(np.average(log2_lengths, weights=weights))


def test_lengths_are_measured_in_octaves():
    """Outlines of discs of radius 64 are 4x those of radius 16: about 2 octaves."""
    assert 1.5 < mean_octave(discs(64, 0)) - mean_octave(discs(16, 1)) < 2.5


def test_the_same_forms_are_near_and_other_sizes_far():
    painting = discs(64, 0)
    assert outline_length_w1(discs(64, 2), painting) < 0.3 < 1.0 < outline_length_w1(discs(12, 3), painting)


def test_the_scale_convention_compares_at_512_whatever_the_sizes():
    """The output at long side 512 and the painting at short side 512: the painting itself, stored
    at twice the size, is at distance ~0; a wide output is compared at 512 px wide."""
    painting = discs(48, 5)
    assert outline_length_w1(np.asarray(Image.fromarray(painting).resize((1024, 1024))), painting) < 0.05
    wide = np.concatenate([painting, painting], axis=1)
    assert outline_length_w1(wide, painting) > 0.5   # its discs are half the size at 512 wide


def test_a_flat_image_gives_a_finite_distance():
    d = outline_length_w1(np.full((100, 300, 3), 128, np.uint8), discs(32, 6))
    assert np.isfinite(d) and d >= 0
