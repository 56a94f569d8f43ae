"""The shared translation parts: the learning-rate schedule, the history pool, the Translator's
padding and directions, the U-Net's shape at the sizes it supports."""
import pytest
import torch

from models.pix2pix.network import UNet
from models.family import lr_factor
from models.translation import ImagePool, PatchGAN, Translator


def test_lr_is_constant_then_falls_linearly_towards_zero():
    factors = [lr_factor(s, 10, 0.5) for s in range(10)]
    assert factors[:5] == [1.0] * 5
    assert all(a > b for a, b in zip(factors[4:], factors[5:])) and 0 < factors[-1] < 0.2
    assert [lr_factor(s, 10, 0.0) for s in range(10)] == [1.0] * 10


def test_pool_fills_then_swaps_old_fakes_in():
    torch.manual_seed(0)
    pool = ImagePool(3, (1, 2, 2))
    first = torch.arange(3.0)[:, None, None, None].expand(3, 1, 2, 2)
    assert torch.equal(pool.query(first), first) and int(pool.count) == 3   # filling: returned as they are
    new = torch.full((20, 1, 2, 2), 9.0)
    out = pool.query(new)
    old = (out[:, 0, 0, 0] < 9).sum().item()
    assert 0 < old < 20                      # about half of them are older fakes
    assert (pool.images == 9).any()          # ... which the new ones replaced
    assert torch.equal(ImagePool(0, (1, 2, 2)).query(new), new)


@pytest.mark.parametrize("h,w", [(20, 28), (64, 64), (100, 37)])
def test_translator_takes_any_size(h, w):
    net = Translator({"a2b": UNet(3, 3, 4, 6), "b2a": UNet(3, 3, 4, 6)}, 2 ** 6).eval()
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        y = net(x)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
        assert not torch.equal(net.set_direction("b2a")(x), y)
    with pytest.raises(ValueError, match="a2b and b2a only"):
        net.set_direction("sideways")


def test_patchgan_gives_a_map_of_patches():
    d = PatchGAN(6, 8, n_layers=3)
    assert d(torch.rand(2, 6, 64, 64)).shape == (2, 1, 6, 6)  # 70x70 receptive fields at 256 px: 30x30
    assert d(torch.rand(1, 6, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("family", ["pix2pix", "cyclegan"])
def test_resize_upsampling_keeps_the_shapes_and_drops_transposed_convs(family):
    from models import registry
    from models.family import TrainInputs

    tiny = {"pix2pix": {"ngf": 4, "ndf": 4, "num_downs": 4}, "cyclegan": {"ngf": 4, "ndf": 4, "n_blocks": 1}}[family]
    nets = {}
    for up in ("transpose", "resize"):
        tp = registry.validate_params(family, {**tiny, "upsample": up}, {})[0]
        nets[up] = registry.load(family).make_trainer(tp, TrainInputs(torch.device("cpu"))).inference_network().eval()
    x = torch.rand(1, 3, 30, 44)
    with torch.no_grad():
        assert nets["resize"](x).shape == nets["transpose"](x).shape == x.shape
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in nets["transpose"].modules())
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in nets["resize"].modules())


@pytest.mark.parametrize("family", ["pix2pix", "cyclegan"])
def test_a_residual_generator_starts_as_the_identity_then_learns_a_change(family):
    from models import registry
    from models.family import TrainInputs

    tiny = {"pix2pix": {"ngf": 4, "ndf": 4, "num_downs": 4, "image_size": 32},
            "cyclegan": {"ngf": 4, "ndf": 4, "n_blocks": 1, "image_size": 32}}[family]
    tp = registry.validate_params(family, {**tiny, "residual": True, "batch_size": 2}, {})[0]
    trainer = registry.load(family).make_trainer(tp, TrainInputs(torch.device("cpu")))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(trainer.inference_network().eval()(x), x)  # exactly: its change is zero
    batch = {"a": x, "b": torch.rand(2, 3, 32, 32)}
    for _ in range(3):
        trainer.train_step(batch)
        trainer.step += 1
    with torch.no_grad():
        moved = (trainer.inference_network().eval()(x) - x).abs().max()
    assert 0 < moved  # the zero conv is a start, not a dead end
    # and the rebuilt inference network from the sidecar is residual too (no tanh on its output)
    net = registry.load(family).build({"train": tp.model_dump(), **trainer.sidecar()})
    assert not isinstance(list(net.modules())[-1], torch.nn.Tanh)


def _pix2pix_trainer(**settings):
    from models import registry
    from models.family import TrainInputs

    tiny = {"ngf": 4, "ndf": 4, "num_downs": 4, "image_size": 32, "batch_size": 2, "dropout": False}
    tp = registry.validate_params("pix2pix", {**tiny, **settings}, {})[0]
    return registry.load("pix2pix").make_trainer(tp, TrainInputs(torch.device("cpu")))


def test_feature_matching_compares_d_features_of_the_generated_and_the_real_pair():
    import copy

    torch.manual_seed(0)
    trainer = _pix2pix_trainer(fm_weight=10.0)
    G, D = trainer.nets["G"], trainer.nets["D"]
    x = torch.rand(2, 6, 32, 32)
    features, logits = D.features_and_logits(x)
    assert torch.equal(logits, D(x)) and len(features) == 4   # after each LeakyReLU of 3 layers + the first

    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    g_before, d_before = copy.deepcopy(G), copy.deepcopy(D)
    losses = trainer.train_step({"a": a, "b": b})
    with torch.no_grad():
        a2, b2 = a * 2 - 1, b * 2 - 1
        real, _ = d_before.features_and_logits(torch.cat([a2, b2], 1))      # D before its update
        fake, _ = D.features_and_logits(torch.cat([a2, g_before(a2)], 1))   # the updated D, as G's step sees it
    expected = sum((f - r).abs().mean() for f, r in zip(fake, real)) / len(fake)
    assert losses["loss_G_FM"] > 0
    assert torch.allclose(losses["loss_G_FM"], expected, rtol=1e-5)


def test_the_l1_only_baseline_never_trains_a_discriminator():
    trainer = _pix2pix_trainer(gan_weight=0.0)
    before = {k: v.clone() for k, v in trainer.nets["D"].state_dict().items()}
    losses = trainer.train_step({"a": torch.rand(2, 3, 32, 32), "b": torch.rand(2, 3, 32, 32)})
    after = trainer.nets["D"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert losses["loss_D"] == losses["loss_G_GAN"] == losses["loss_G_FM"] == 0 < losses["loss_G_L1"]
