import pytest
import torch

from models.encoders import build_encoder
from models.losses import (PerceptualLoss, content_loss, gram_matrix, mean_std, sliced_wasserstein, style_loss,
                           total_variation)


def test_gram_matrix_known_values():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)  # C=1, H=W=2
    assert torch.allclose(gram_matrix(f), torch.tensor([[[30.0 / 4]]]))
    f = torch.stack([torch.ones(2, 2), 2 * torch.ones(2, 2)])[None]  # C=2
    want = torch.tensor([[4.0, 8.0], [8.0, 16.0]]) / (2 * 2 * 2)
    assert torch.allclose(gram_matrix(f)[0], want)
    assert gram_matrix(torch.rand(3, 5, 4, 6)).shape == (3, 5, 5)


def test_mean_std():
    f = torch.tensor([[0.0, 2.0], [0.0, 2.0]]).view(1, 1, 2, 2)
    assert torch.allclose(mean_std(f, eps=0), torch.tensor([[1.0, 1.0]]))


def test_total_variation_known_values():
    img = torch.zeros(1, 1, 3, 3)
    assert total_variation(img) == 0
    img[0, 0, :, 1] = 1.0  # a vertical line: no vertical change, |0-1|,|1-0| horizontally
    assert torch.isclose(total_variation(img), torch.tensor(1.0))  # dh 0 + dw mean(1,1)=1
    img = torch.arange(4.0).view(1, 1, 2, 2)  # [[0,1],[2,3]]: dh = 2, dw = 1
    assert torch.isclose(total_variation(img), torch.tensor(3.0))


def test_sliced_wasserstein_sees_the_distribution_not_the_positions():
    torch.manual_seed(0)
    target = torch.rand(1, 4, 16, 16)
    shuffled = target.flatten(2)[:, :, torch.randperm(256)].view(1, 4, 16, 16)
    assert sliced_wasserstein(shuffled, target) == pytest.approx(0, abs=1e-10)  # same features, moved
    # a different sample count: the target's quantiles are compared at the output's
    assert sliced_wasserstein(target[:, :, ::2, ::2].repeat(2, 1, 1, 1), target) < 0.01
    # same mean and second moments per channel, different shape of distribution: a Gram matrix and
    # the channel means/deviations cannot tell these apart, the sliced distance can
    two_values = (torch.rand(1, 1, 16, 16) > 0.5).float() * 2 - 1                  # -1 or +1
    gaussian = torch.randn(1, 1, 16, 16)
    gaussian = (gaussian - gaussian.mean()) / gaussian.std(unbiased=False)
    assert torch.allclose(mean_std(two_values, eps=0), mean_std(gaussian, eps=0), atol=0.1)
    assert sliced_wasserstein(gaussian, two_values) > 0.1


def test_content_and_style_loss_zero_at_target_and_normalised():
    feats = {"a": torch.rand(1, 4, 8, 8), "b": torch.rand(1, 8, 4, 4)}
    assert content_loss(feats, feats, ["a", "b"]) == 0
    stats = {n: gram_matrix(f) for n, f in feats.items()}
    assert style_loss(feats, stats, ["a", "b"]) == 0
    # per-layer normalisation: scaling a layer's features does not change its relative loss
    other = {n: f * 0.5 for n, f in feats.items()}
    scaled_feats = {n: f * 10 for n, f in feats.items()}
    scaled_stats = {n: gram_matrix(f) for n, f in scaled_feats.items()}
    scaled_other = {n: f * 10 for n, f in other.items()}
    assert torch.isclose(style_loss(other, stats, ["a"]), style_loss(scaled_other, scaled_stats, ["a"]))
    assert torch.isclose(style_loss(other, stats, ["a"]), torch.tensor((1 - 0.25) ** 2))


def test_style_layer_weights_scale_only_their_own_term():
    torch.manual_seed(0)
    target = {"a": torch.rand(1, 4, 8, 8), "b": torch.rand(1, 8, 4, 4)}
    stats = {n: gram_matrix(f) for n, f in target.items()}
    out = {"a": target["a"] * 0.5, "b": target["b"] * 0.8}
    a_alone = style_loss(out, stats, ["a"]) / 2  # each layer's share of a two-layer mean
    b_alone = style_loss(out, stats, ["b"]) / 2
    assert torch.isclose(style_loss(out, stats, ["a", "b"], layer_weights={}), a_alone + b_alone)
    assert torch.isclose(style_loss(out, stats, ["a", "b"], layer_weights={"b": 0.0}), a_alone)
    assert torch.isclose(style_loss(out, stats, ["a", "b"], layer_weights={"a": 3.0, "b": 0.5}),
                         3 * a_alone + 0.5 * b_alone)


def test_sliced_wasserstein_samples_positions_and_computes_in_fp32():
    torch.manual_seed(0)
    target = torch.rand(1, 8, 32, 32)
    # 64 of 1,024 positions drawn: the same features still match, other ones do not
    assert sliced_wasserstein(target, target, samples=64) < 0.01
    assert sliced_wasserstein(target * 0.5, target, samples=64) > 0.02
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = sliced_wasserstein(target.bfloat16() + 0.003, target)
    assert d.dtype == torch.float32 and d < 1e-4  # bf16's rounding (~0.004 at 1) would swamp it


@pytest.mark.parametrize("statistic,palette", [("gram", 0.0), ("meanstd", 0.0), ("swd", 0.0), ("swd", 1.0)])
def test_perceptual_loss_weighting_and_grad(statistic, palette):
    torch.manual_seed(0)
    enc = build_encoder("efficientnet_lite0", ["stem", "block1.expand", "block3.expand"])
    style = torch.rand(3, 48, 48)
    loss = PerceptualLoss(enc, style, ["stem", "block1.expand"], ["block3.expand"], content_weight=2.0,
                          style_weight=5.0, tv_weight=3.0, statistic=statistic, palette_weight=palette)
    content = torch.rand(2, 3, 32, 32)
    out = content.clone().requires_grad_(True)
    terms = loss(out, content)
    assert set(terms) == {"total", "content", "style", "tv"}
    assert terms["content"].item() == 0  # output == content
    assert torch.isclose(terms["tv"], 3.0 * total_variation(content))
    assert torch.isclose(terms["total"], terms["content"] + terms["style"] + terms["tv"])
    terms["total"].backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in enc.parameters())
    # the painting itself has zero style loss, its palette included
    assert loss(style[None], style[None])["style"].item() == pytest.approx(0, abs=1e-6)
    if palette:  # a darkened painting: the palette term adds to the layers' loss
        recoloured = style[None] * 0.3
        torch.manual_seed(1)
        with_palette = loss(recoloured, recoloured)["style"]
        loss.palette_weight = 0.0
        torch.manual_seed(1)  # the layers draw the same directions
        assert with_palette - loss(recoloured, recoloured)["style"] > 0.05
