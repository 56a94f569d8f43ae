import numpy as np
import pytest

from tasks.evaluation.colour import colour_response, grayscale_copy


def test_a_colour_blind_map_is_told_from_one_that_sees_hue():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    gray = grayscale_copy(image)
    assert gray.shape == image.shape and (gray[..., 0] == gray[..., 2]).all()

    def by_brightness(x):  # recolours by luminance only
        return grayscale_copy(x)[..., ::-1] // 2

    def keeps_hue(x):
        return x // 2

    inputs, blind = colour_response(by_brightness, image)
    _, seeing = colour_response(keeps_hue, image)
    assert inputs > 20
    assert blind < 1  # rounding only
    assert seeing == pytest.approx(inputs / 2, abs=1)
