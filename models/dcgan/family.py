"""dcgan: an unconditional GAN (Radford et al. 2016) in DCGAN form, sized for 28-64 px; the
training step is models/gan.py's (D, then G, then the EMA of G)."""
from __future__ import annotations

from models.dcgan.network import Discriminator, Generator
from models.dcgan.params import TrainParams
from models.family import Family, TrainInputs
from models.gan import GANTrainer, Sampler


def make_trainer(tp: TrainParams, inputs: TrainInputs) -> GANTrainer:
    G = Generator(tp.nz, tp.ngf, inputs.channels, tp.image_size, tp.g_extra_layers, tp.latent_categories)
    D = Discriminator(tp.ndf, inputs.channels, tp.image_size, tp.spectral_norm, tp.d_extra_layers,
                      tp.latent_categories)
    return GANTrainer(tp, G, D, inputs.device, inputs.channels, latent_categories=tp.latent_categories)


def build(sidecar: dict) -> Sampler:
    tp = TrainParams.model_validate(sidecar["train"])
    G = Generator(tp.nz, tp.ngf, int(sidecar["channels"]), tp.image_size, tp.g_extra_layers, tp.latent_categories)
    return Sampler(G, tp.nz, conditional=False, latent_categories=tp.latent_categories)


FAMILY = Family("dcgan", make_trainer, build, shared_code=("models/gan.py", "models/gan_params.py", "models/layers.py"))
