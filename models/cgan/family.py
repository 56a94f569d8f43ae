"""cgan: a class-conditional GAN. G takes [z, embed(label)]; D is conditioned by projection
(Miyato & Koyama 2018) or by one-hot label maps; the step is models/gan.py's."""
from __future__ import annotations

from models.cgan.network import Discriminator, Generator
from models.cgan.params import TrainParams
from models.family import Family, TrainInputs
from models.gan import GANTrainer, Sampler
from stylepipe.errors import StageError


def make_trainer(tp: TrainParams, inputs: TrainInputs) -> GANTrainer:
    if inputs.num_classes < 2:
        raise StageError("the conditional GAN needs a labelled dataset with at least two classes")
    G = Generator(tp.nz, tp.ngf, inputs.channels, tp.image_size, inputs.num_classes, tp.emb_dim, tp.g_extra_layers)
    D = Discriminator(tp.ndf, inputs.channels, tp.image_size, inputs.num_classes, tp.spectral_norm, tp.cond,
                      tp.d_extra_layers)
    return GANTrainer(tp, G, D, inputs.device, inputs.channels, inputs.num_classes)


def build(sidecar: dict) -> Sampler:
    tp = TrainParams.model_validate(sidecar["train"])
    G = Generator(tp.nz, tp.ngf, int(sidecar["channels"]), tp.image_size, int(sidecar["num_classes"]), tp.emb_dim,
                  tp.g_extra_layers)
    return Sampler(G, tp.nz, conditional=True)


FAMILY = Family("cgan", make_trainer, build, shared_code=("models/gan.py", "models/gan_params.py", "models/layers.py"))
