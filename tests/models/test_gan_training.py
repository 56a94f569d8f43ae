"""The GAN trainer's optional regularisers (models/gan.py): the lazy R1 penalty and the linear
learning-rate decay. Their bit-exact resume is covered by the family contract test (dcgan's TINY)."""
from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from models.dcgan.family import make_trainer
from models.dcgan.params import TrainParams
from models.family import TrainInputs, lr_factor

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
