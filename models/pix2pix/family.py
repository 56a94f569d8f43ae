"""pix2pix (Isola et al. 2017): paired translation A -> B. A U-Net generator trained with L1 to
the target (lambda 100) plus a conditional PatchGAN discriminator, which sees the input beside
the real or generated output; D's loss is halved, as in the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix). gan_weight 0 gives the same U-Net trained on L1 alone.
fm_weight adds pix2pixHD's feature matching (Wang et al. 2018): G's output must give D the
features the real target gives it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.family import Family, TrainInputs, Trainer, lr_factor, set_lr
from models.pix2pix.network import UNet
from models.pix2pix.params import TrainParams
from models.translation import (PatchGAN, Translator, feature_matching_loss, gan_loss, init_weights, start_as_identity,
                                to_model_range)


def generator(tp: TrainParams, channels: int = 3) -> UNet:
    return UNet(channels, channels, tp.ngf, tp.num_downs, tp.norm, tp.dropout, tp.upsample, tp.residual)


class Pix2PixTrainer(Trainer):
    loss_names = ("loss_D", "loss_G_GAN", "loss_G_L1", "loss_G_FM")

    def __init__(self, tp: TrainParams, inputs: TrainInputs):
        super().__init__()
        self.tp = tp
        G, D = generator(tp, inputs.channels), PatchGAN(2 * inputs.channels, tp.ndf, tp.d_layers, tp.norm)
        init_weights(G)
        init_weights(D)
        if tp.residual:
            start_as_identity(G)
        self.nets = {"G": G.to(inputs.device), "D": D.to(inputs.device)}
        betas = (tp.beta1, tp.beta2)
        self.opts = {"G": torch.optim.Adam(G.parameters(), lr=tp.lr, betas=betas),
                     "D": torch.optim.Adam(D.parameters(), lr=tp.lr, betas=betas)}

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tp, G, D = self.tp, self.nets["G"], self.nets["D"]
        set_lr(self.opts, tp.lr * lr_factor(self.step, tp.steps, tp.decay_fraction))
        real_a, real_b = to_model_range(batch["a"]), to_model_range(batch["b"])
        fake_b = G(real_a)

        zero = torch.zeros((), device=real_a.device)
        loss_d = loss_g_gan = loss_fm = zero
        if tp.gan_weight > 0 or tp.fm_weight > 0:
            fake_logits = D(torch.cat([real_a, fake_b.detach()], 1))
            # D's features of the real pair before its update, as pix2pixHD: feature matching's target
            real_features, real_logits = D.features_and_logits(torch.cat([real_a, real_b], 1))
            loss_d = 0.5 * (gan_loss(tp.gan_loss, fake_logits, False) + gan_loss(tp.gan_loss, real_logits, True))
            self.opts["D"].zero_grad(set_to_none=True)
            loss_d.backward()
            self.opts["D"].step()
            fake_features, fake_logits = D.features_and_logits(torch.cat([real_a, fake_b], 1))
            loss_g_gan = gan_loss(tp.gan_loss, fake_logits, True)
            if tp.fm_weight > 0:
                loss_fm = feature_matching_loss(fake_features, real_features)

        loss_l1 = F.l1_loss(fake_b, real_b)
        self.opts["G"].zero_grad(set_to_none=True)
        (tp.gan_weight * loss_g_gan + tp.l1_weight * loss_l1 + tp.fm_weight * loss_fm).backward()
        self.opts["G"].step()
        return {"loss_D": loss_d.detach(), "loss_G_GAN": loss_g_gan.detach(), "loss_G_L1": loss_l1.detach(),
                "loss_G_FM": loss_fm.detach()}

    def inference_network(self) -> Translator:
        return Translator({"a2b": self.modules()["G"]}, 2 ** self.tp.num_downs)

    def sidecar(self) -> dict:
        return {"channels": 3, "directions": ["a2b"]}


def make_trainer(tp: TrainParams, inputs: TrainInputs) -> Pix2PixTrainer:
    return Pix2PixTrainer(tp, inputs)


def build(sidecar: dict) -> Translator:
    tp = TrainParams.model_validate(sidecar["train"])
    return Translator({"a2b": generator(tp, int(sidecar.get("channels", 3)))}, 2 ** tp.num_downs)


FAMILY = Family("pix2pix", make_trainer, build,
                shared_code=("models/translation.py", "models/translation_params.py"))
