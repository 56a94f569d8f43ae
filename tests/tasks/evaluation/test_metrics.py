"""The evaluate stage's numbers on tiny synthetic images with the real evaluation encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.evaluation import metrics as em

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def photo(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    """A smooth synthetic 'photo': gradients plus a few discs, float32 (H, W, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin(x / 7 + y / 11)], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 16)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return img.astype(np.float32)


def stripes(h: int = 64, w: int = 80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    band = ((x + y) // 5) % 2
    return np.where(band[..., None] == 1, [0.95, 0.8, 0.1], [0.1, 0.2, 0.7]).astype(np.float32)


@pytest.fixture(scope="module")
def tools():
    torch.manual_seed(0)
    return em.build_eval_encoder(Path("data/weights"), CPU)


def test_eval_dims_keep_the_short_side_and_multiples_of_8():
    assert em.eval_dims(600, 400, 256) == (384, 256)
    assert em.eval_dims(451, 300, 64) == (96, 64)
    w, h = em.eval_dims(1000, 333, 100)
    assert w % 8 == 0 and h % 8 == 0 and abs(h - 100) <= 4


def test_identical_result_has_zero_content_loss_and_ssim_one(tools):
    encoder, style_layers, content_layers = tools
    c = photo()
    f = em.features(encoder, c, CPU)
    again = em.features(encoder, c.copy(), CPU)
    assert em.content_loss(again, f, content_layers) == pytest.approx(0.0, abs=1e-9)
    assert em.ssim(c, c.copy()) == pytest.approx(1.0)


def test_noise_has_low_ssim_and_a_large_content_loss(tools):
    encoder, _, content_layers = tools
    c = photo()
    noise = np.random.default_rng(1).random(c.shape).astype(np.float32)
    assert em.ssim(c, noise) < 0.1
    loss = em.content_loss(em.features(encoder, noise, CPU), em.features(encoder, c, CPU), content_layers)
    assert loss > 0.3


def test_style_loss_is_zero_for_the_style_image_and_drops_as_it_is_blended_in(tools):
    encoder, style_layers, _ = tools
    s, c = stripes(), photo()
    target = em.grams(em.features(encoder, s, CPU), style_layers)

    def loss(img):
        return em.style_loss(em.grams(em.features(encoder, img, CPU), style_layers), target)

    assert loss(s) == pytest.approx(0.0, abs=1e-9)
    assert loss(c) > loss(0.5 * c + 0.5 * s) > loss(0.1 * c + 0.9 * s) > 0


def test_colour_distance_is_zero_for_the_same_palette_and_grows_with_a_shift():
    c = photo()
    shuffled = c.reshape(-1, 3)[np.random.default_rng(2).permutation(c.shape[0] * c.shape[1])].reshape(c.shape)
    lab = em.lab_pixels(c)
    # same colours in other places: the distance ignores layout
    assert em.colour_distance(em.lab_pixels(shuffled), lab) == pytest.approx(0.0, abs=1e-6)
    slightly = em.colour_distance(em.lab_pixels(np.clip(c * 0.9, 0, 1)), lab)
    strongly = em.colour_distance(em.lab_pixels(np.clip(c * 0.5, 0, 1)), lab)
    assert 0 < slightly < strongly


def test_lpips_is_reported_unavailable_with_a_reason_when_it_cannot_load(monkeypatch):
    monkeypatch.setattr(em.importlib.util, "find_spec", lambda name: None)
    ok, note = em.lpips_status()
    assert not ok and "lpips" in note


def test_run_network_returns_the_input_size_and_timing_covers_each_size():
    from models.johnson.network import build_network

    torch.manual_seed(0)
    net = build_network("fast").eval()
    c = photo(36, 44)  # not a multiple of 4: the network pads and crops
    out = em.run_network(net, c, CPU)
    assert out.shape == c.shape and out.min() >= 0 and out.max() <= 1
    timings = em.time_inference(net, [32, 48], repeats=1, device=CPU)
    assert sorted(timings) == [32, 48] and all(ms > 0 for ms in timings.values())
