"""The GAN trainer's options (models/gan.py): the lazy R1 penalty, the linear learning-rate decay and
top-k training and the categorical latent code (InfoGAN). Their bit-exact resume is covered by the family contract test (dcgan's TINY)."""
from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from models.dcgan.family import make_trainer
from models.dcgan.params import TrainParams
import torch.nn.functional as F

from models.family import TrainInputs, lr_factor, seeded_noise
from models.gan import g_loss, topk_count, with_code

CPU = torch.device("cpu")


def trainer(**settings):
    torch.manual_seed(0)
    tp = TrainParams(batch_size=8, ngf=8, ndf=8, nz=8, **settings)
    return make_trainer(tp, TrainInputs(device=CPU, channels=1))


def batch():
    return {"image": torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))}


@pytest.mark.parametrize("gamma", [0.5, 4.0])
def test_r1_adds_the_gradient_penalty_on_real_images_to_the_d_loss(gamma):
    plain, penalised = trainer(), trainer(r1_gamma=gamma, r1_every=3)
    D0 = copy.deepcopy(penalised.nets["D"])  # the weights the penalty is taken at
    real = (batch()["image"] * 2 - 1).requires_grad_(True)
    grad, = torch.autograd.grad(D0(real).sum(), real)
    expected = gamma / 2 * 3 * grad.pow(2).flatten(1).sum(1).mean()
    assert expected > 1e-6  # not vacuous

    torch.manual_seed(5)
    loss_plain = plain.train_step(batch())["loss_D"]
    torch.manual_seed(5)
    loss_r1 = penalised.train_step(batch())["loss_D"]
    torch.testing.assert_close(loss_r1 - loss_plain, expected, rtol=1e-4, atol=1e-6)
    assert not torch.equal(plain.nets["D"].head.weight, penalised.nets["D"].head.weight)


def test_r1_runs_only_every_r1_every_steps():
    plain, penalised = trainer(), trainer(r1_gamma=4.0, r1_every=3)
    plain.step = penalised.step = 1  # 1 % 3 != 0: no penalty on this step
    torch.manual_seed(5)
    a = plain.train_step(batch())
    torch.manual_seed(5)
    b = penalised.train_step(batch())
    assert torch.equal(a["loss_D"], b["loss_D"])
    assert torch.equal(plain.nets["D"].head.weight, penalised.nets["D"].head.weight)


def test_learning_rates_follow_the_linear_decay():
    t = trainer(steps=100, decay_fraction=0.5, lr_g=1e-3, lr_d=4e-3)
    for step, expected in ((10, 1.0), (49, 1.0), (75, lr_factor(75, 100, 0.5)), (99, lr_factor(99, 100, 0.5))):
        t.step = step
        t.train_step(batch())
        assert t.opts["G"].param_groups[0]["lr"] == pytest.approx(1e-3 * expected)
        assert t.opts["D"].param_groups[0]["lr"] == pytest.approx(4e-3 * expected)
    assert lr_factor(99, 100, 0.5) < 0.05
    still = trainer(steps=100, lr_g=1e-3)  # decay_fraction 0: constant
    still.step = 99
    still.train_step(batch())
    assert still.opts["G"].param_groups[0]["lr"] == 1e-3


def test_r1_with_torch_compile_is_refused_in_the_params():
    with pytest.raises(ValidationError, match="r1_gamma needs compile: false"):
        TrainParams(r1_gamma=1.0, compile=True)
    TrainParams(r1_gamma=0.0, compile=True)


def test_topk_count_falls_linearly_to_its_fraction_at_half_the_steps():
    assert [topk_count(64, s, 100, 0.5) for s in (0, 25, 50, 99)] == [64, 48, 32, 32]
    assert topk_count(64, 99, 100, 1.0) == 64
    assert topk_count(3, 99, 100, 0.01) == 1  # never an empty G batch


def test_topk_trains_g_only_on_the_fakes_d_rates_most_real():
    plain, topk = trainer(steps=10), trainer(steps=10, g_topk=0.5)
    plain.step = topk.step = 5  # half the steps: 4 of the 8 fakes
    seen = []
    plain.nets["D"].register_forward_hook(lambda module, args, out: seen.append(out.detach()))
    torch.manual_seed(5)
    a = plain.train_step(batch())
    torch.manual_seed(5)
    b = topk.train_step(batch())
    scores = seen[-1]  # D (after its step, the same in both) on the fakes of the G step
    torch.testing.assert_close(a["loss_G"], g_loss("bce", scores))
    torch.testing.assert_close(b["loss_G"], g_loss("bce", scores.topk(4).values))
    assert b["loss_G"] < a["loss_G"]  # the kept fakes are the ones D finds most real
    assert torch.equal(a["loss_D"], b["loss_D"])
    assert not torch.equal(plain.nets["G"].to_image[0].weight, topk.nets["G"].to_image[0].weight)


def test_seeded_noise_appends_a_uniform_one_hot_code_drawn_after_z():
    seeds = list(range(2000))
    plain, coded = seeded_noise(seeds, 8), seeded_noise(seeds, 8, categories=5)
    assert coded.shape == (2000, 13)
    assert torch.equal(coded[:, :8], plain)  # z is the same; the code comes after it
    assert torch.equal(coded[:, 8:].sum(1), torch.ones(2000))
    shares = coded[:, 8:].mean(0)
    assert shares.min() > 0.17 and shares.max() < 0.23  # uniform (0.2 each)
    truncated = seeded_noise([7, 3], 8, 1.0, 5)
    assert torch.equal(truncated, seeded_noise([7, 3], 8, 1.0, 5))
    assert truncated[:, :8].abs().max() <= 1.0 and torch.equal(truncated[:, 8:].sum(1), torch.ones(2))


def test_the_code_head_is_trained_to_recover_the_fakes_code():
    plain, coded = trainer(latent_categories=4, info_weight=0.0), trainer(latent_categories=4, info_weight=2.0)
    assert coded.loss_names[-1] == "loss_info"
    G0, D0 = copy.deepcopy(coded.nets["G"]), copy.deepcopy(coded.nets["D"])
    torch.manual_seed(5)  # the draws train_step makes: z, then the code
    z = torch.randn(8, 8)
    code = torch.randint(0, 4, (8,))
    _, code_logits = D0(G0(with_code(z, code, 4)))
    expected = 2.0 * F.cross_entropy(code_logits, code)

    torch.manual_seed(5)
    a = plain.train_step(batch())
    torch.manual_seed(5)
    b = coded.train_step(batch())
    torch.testing.assert_close(b["loss_D"] - a["loss_D"], expected, rtol=1e-4, atol=1e-6)
    assert not torch.equal(plain.nets["D"].code_head.weight, coded.nets["D"].code_head.weight)
    assert b["loss_info"] > 0


def test_a_sample_is_a_function_of_its_seed_and_its_code_changes_it():
    t = trainer(latent_categories=4)
    t.train_step(batch())
    sampler = t.inference_network()
    a, b = sampler.sample([1, 2, 3]), sampler.sample([3, 2, 1])
    assert torch.equal(a[0], b[2])
    z = seeded_noise([1], 8)
    with torch.no_grad():
        images = [sampler(with_code(z, torch.tensor([c]), 4)) for c in range(4)]
    assert all(not torch.equal(images[0], other) for other in images[1:])
    rows = sampler.code_rows(3)  # code c, seed j at row c, column j
    assert rows.shape == (12, 1, 28, 28)
    torch.testing.assert_close(rows[3 * 2 + 1], images[2][0].add(1).div(2).clamp(0, 1))
