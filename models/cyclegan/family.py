"""CycleGAN (Zhu et al. 2017): unpaired translation both ways. Two ResNet generators (G_A: A -> B,
G_B: B -> A), two PatchGAN discriminators (D_A judges domain B, D_B domain A), least-squares GAN
loss, cycle losses |G_B(G_A(a)) - a| and |G_A(G_B(b)) - b| (lambda 10), identity losses
|G_A(b) - b| and |G_B(a) - a| (lambda 0.5 x 10), D trained on a history pool of fakes with its
loss halved, and a linear learning-rate decay; the step order (G, then D) and the losses follow
junyanz/pytorch-CycleGAN-and-pix2pix."""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from models.cyclegan.network import STRIDE, ResnetGenerator
from models.cyclegan.params import TrainParams
from models.family import Family, TrainInputs, Trainer, lr_factor, set_lr
from models.translation import (ImagePool, PatchGAN, Translator, gan_loss, init_weights, start_as_identity,
                                to_model_range)


def generator(tp: TrainParams, channels: int = 3) -> ResnetGenerator:
    return ResnetGenerator(channels, channels, tp.ngf, tp.n_blocks, tp.norm, tp.upsample, tp.residual)


class CycleGANTrainer(Trainer):
    loss_names = ("loss_D_A", "loss_D_B", "loss_G_A", "loss_G_B", "cycle_A", "cycle_B", "idt_A", "idt_B")

    def __init__(self, tp: TrainParams, inputs: TrainInputs):
        super().__init__()
        self.tp, c = tp, inputs.channels
        nets = {"G_A": generator(tp, c), "G_B": generator(tp, c),
                "D_A": PatchGAN(c, tp.ndf, tp.d_layers, tp.norm), "D_B": PatchGAN(c, tp.ndf, tp.d_layers, tp.norm)}
        for net in nets.values():
            init_weights(net)
        if tp.residual:
            start_as_identity(nets["G_A"])
            start_as_identity(nets["G_B"])
        self.nets = {k: v.to(inputs.device) for k, v in nets.items()}
        shape = (c, tp.image_size, tp.image_size)
        # pool_A holds fakes of domain B (for D_A), pool_B fakes of domain A (for D_B)
        self.extra = {"pool_A": ImagePool(tp.pool_size, shape).to(inputs.device),
                      "pool_B": ImagePool(tp.pool_size, shape).to(inputs.device)}
        betas = (tp.beta1, tp.beta2)
        self.opts = {
            "G": torch.optim.Adam(itertools.chain(nets["G_A"].parameters(), nets["G_B"].parameters()), lr=tp.lr, betas=betas),
            "D": torch.optim.Adam(itertools.chain(nets["D_A"].parameters(), nets["D_B"].parameters()), lr=tp.lr, betas=betas),
        }

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tp, n = self.tp, self.nets
        set_lr(self.opts, tp.lr * lr_factor(self.step, tp.steps, tp.decay_fraction))
        real_a, real_b = to_model_range(batch["a"]), to_model_range(batch["b"])
        fake_b, fake_a = n["G_A"](real_a), n["G_B"](real_b)
        rec_a, rec_b = n["G_B"](fake_b), n["G_A"](fake_a)

        loss_g_a = gan_loss(tp.gan_loss, n["D_A"](fake_b), True)
        loss_g_b = gan_loss(tp.gan_loss, n["D_B"](fake_a), True)
        cycle_a, cycle_b = F.l1_loss(rec_a, real_a), F.l1_loss(rec_b, real_b)
        zero = torch.zeros((), device=real_a.device)
        idt_a = idt_b = zero
        if tp.identity_weight > 0:
            idt_a, idt_b = F.l1_loss(n["G_A"](real_b), real_b), F.l1_loss(n["G_B"](real_a), real_a)
        loss_g = (loss_g_a + loss_g_b + tp.cycle_weight * (cycle_a + cycle_b)
                  + tp.cycle_weight * tp.identity_weight * (idt_a + idt_b))
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()

        pooled_b, pooled_a = self.extra["pool_A"].query(fake_b), self.extra["pool_B"].query(fake_a)
        loss_d_a = 0.5 * (gan_loss(tp.gan_loss, n["D_A"](real_b), True) + gan_loss(tp.gan_loss, n["D_A"](pooled_b), False))
        loss_d_b = 0.5 * (gan_loss(tp.gan_loss, n["D_B"](real_a), True) + gan_loss(tp.gan_loss, n["D_B"](pooled_a), False))
        self.opts["D"].zero_grad(set_to_none=True)  # also drops what the G step left in D
        (loss_d_a + loss_d_b).backward()
        self.opts["D"].step()
        return {k: v.detach() for k, v in zip(self.loss_names, (loss_d_a, loss_d_b, loss_g_a, loss_g_b,
                                                                 cycle_a, cycle_b, idt_a, idt_b))}

    def inference_network(self) -> Translator:
        m = self.modules()
        return Translator({"a2b": m["G_A"], "b2a": m["G_B"]}, STRIDE)

    def sidecar(self) -> dict:
        return {"channels": 3, "directions": ["a2b", "b2a"]}


def make_trainer(tp: TrainParams, inputs: TrainInputs) -> CycleGANTrainer:
    return CycleGANTrainer(tp, inputs)


def build(sidecar: dict) -> Translator:
    tp = TrainParams.model_validate(sidecar["train"])
    c = int(sidecar.get("channels", 3))
    return Translator({"a2b": generator(tp, c), "b2a": generator(tp, c)}, STRIDE)


FAMILY = Family("cyclegan", make_trainer, build,
                shared_code=("models/translation.py", "models/translation_params.py"))
