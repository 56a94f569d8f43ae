import numpy as np
import pytest

from tasks.evaluation.clipping import clipped_share, opening


def noisy_grey(h=64, w=80, seed=0) -> np.ndarray:
    """Mid-grey with texture, nowhere near the ends of the range."""
    return np.random.default_rng(seed).integers(60, 200, (h, w, 3), dtype=np.uint8)


def test_a_textured_image_has_no_clipped_regions():
    assert clipped_share(noisy_grey()) == 0.0


@pytest.mark.parametrize("value, channels", [(0, slice(None)), (255, slice(None)), (255, slice(0, 2)), (1, 2)])
def test_a_flat_clipped_square_counts_whole(value, channels):
    """A pure black or white hole, or a region pinned in one or two channels only (a yellow glow)."""
    img = noisy_grey()
    img[10:30, 20:45, channels] = value
    assert clipped_share(img) == pytest.approx(20 * 25 / (64 * 80))


def test_outlines_specks_and_regions_smaller_than_the_square_do_not_count():
    img = noisy_grey()
    img[:, 40:43] = 0            # a 3-px dark outline, the whole height
    img[5, 5] = img[50, 70] = 255
    img[40:46, 10:16] = 255      # 6x6: smaller than the 7x7 square
    assert clipped_share(img) == 0.0
    img[40:47, 10:17] = 255      # 7x7: the smallest that counts
    assert clipped_share(img) == pytest.approx(49 / (64 * 80))


def test_an_l_shaped_region_counts_only_where_the_square_fits():
    """The opening keeps the parts a 7x7 square covers: the arm 4 px thin drops out, the blocks stay."""
    mask = np.zeros((30, 30), bool)
    mask[0:10, 0:10] = True
    mask[0:4, 10:25] = True
    mask[20:27, 20:27] = True
    kept = opening(mask)
    assert kept[0:10, 0:10].all() and kept[20:27, 20:27].all()
    assert not kept[0:4, 10:25].any() and kept.sum() == 100 + 49


def test_images_smaller_than_the_square_and_other_dtypes():
    assert clipped_share(np.zeros((5, 100, 3), np.uint8)) == 0.0
    assert clipped_share(np.zeros((8, 8), np.uint8)) == 1.0
    with pytest.raises(ValueError, match="uint8"):
        clipped_share(np.zeros((8, 8, 3), np.float32))
