"""Noise truncation for GAN sampling (models/family.py seeded_noise, models/gan.py Sampler and
set_truncation, the ledger identity in tasks/bulk/plan.py, params' infer.truncation)."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from models.dcgan.network import Generator
from models.family import seeded_noise
from models.gan import Sampler, set_truncation
from models.gan_params import SampleInferParams
from models.weights import WEIGHTS_FILE
from stylepipe.errors import StageError
from tasks.bulk.plan import ModelSpec, model_hash


def test_truncated_noise_is_bounded_and_a_function_of_the_seed():
    plain = seeded_noise([3, 4], 64)
    assert torch.equal(plain, seeded_noise([3, 4], 64, None))
    assert plain.abs().max() > 1.0  # so the bound below is not vacuous
    z = seeded_noise([3, 4, 5], 64, truncation=1.0)
    assert z.abs().max() <= 1.0
    assert torch.equal(z[1], seeded_noise([4], 64, truncation=1.0)[0])  # not the batch's
    kept = plain[0].abs() <= 1.0
    assert torch.equal(z[0][kept], plain[0][kept])  # only the entries outside are redrawn
    with pytest.raises(ValueError):
        seeded_noise([0], 8, truncation=0.0)


def test_a_truncated_sampler_draws_other_images_and_only_gans_take_it():
    torch.manual_seed(0)
    net = Sampler(Generator(nz=8, ngf=8, channels=1, image_size=28).eval(), 8, conditional=False)
    plain = net.sample([0, 1])
    set_truncation(net, 0.5)
    assert net.truncation == 0.5
    assert not torch.equal(net.sample([0, 1]), plain)
    set_truncation(net, None)  # None leaves it as it is
    assert net.truncation == 0.5
    with pytest.raises(StageError, match="> 0"):
        set_truncation(net, -1.0)
    with pytest.raises(StageError, match="GAN option"):
        set_truncation(nn.Linear(2, 2), 1.0, "vae")


def test_truncation_is_part_of_the_ledger_identity_and_the_params(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"weights")
    plain, truncated = model_hash(ModelSpec(str(tmp_path))), model_hash(ModelSpec(str(tmp_path), truncation=0.7))
    assert plain != truncated and truncated.startswith(plain)
    assert model_hash(ModelSpec(str(tmp_path), truncation=0.7)) == truncated
    assert SampleInferParams().truncation is None
    assert SampleInferParams(truncation=1.5).truncation == 1.5
    with pytest.raises(ValidationError):
        SampleInferParams(truncation=0)
