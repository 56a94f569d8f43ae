"""Shared GAN machinery for the dcgan and cgan families: losses, the EMA generator, per-seed noise
and one trainer that steps D, then G. The families differ only in their networks (models/dcgan,
models/cgan) and in whether G and D see a class label."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.family import Trainer, lr_factor, seeded_noise, set_lr
from stylepipe.errors import StageError

LOSSES = ("bce", "hinge")


def d_loss(loss: str, real: Tensor, fake: Tensor) -> Tensor:
    if loss == "bce":
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()  # hinge


def g_loss(loss: str, fake: Tensor) -> Tensor:
    if loss == "bce":  # non-saturating
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return -fake.mean()  # hinge


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Exponential moving average of the parameters; buffers (BatchNorm statistics) are copied."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


@torch.no_grad()
def recalibrate_bn(G: nn.Module, nz: int, num_classes: int = 0, n: int = 2048, batch_size: int = 256,
                   seed: int = 0, latent_categories: int = 0) -> None:
    """Re-estimate the BatchNorm running statistics of an EMA generator for its own weights (it
    copies the live G's, which belong to other weights): a plain average over n samples, noise
    from a CPU generator seeded with `seed` (the global RNG is untouched). Leaves G in eval mode."""
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    G.train()
    for _ in range(n // batch_size):
        z = torch.randn(batch_size, nz, generator=gen)
        if latent_categories:
            z = with_code(z, torch.randint(0, latent_categories, (batch_size,), generator=gen), latent_categories)
        z = z.to(device)
        if num_classes:
            G(z, torch.randint(0, num_classes, (batch_size,), generator=gen).to(device))
        else:
            G(z)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    G.eval()


def with_code(z: Tensor, code: Tensor, categories: int) -> Tensor:
    """[z, one-hot code]: the generator input of a model with a categorical latent code."""
    return torch.cat([z, F.one_hot(code, categories).to(z.dtype)], 1)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA warm-up: early on, an average over about all steps so far; then the fixed decay."""
    return min(decay, (1.0 + step) / (10.0 + step))


def topk_count(n: int, step: int, steps: int, final_fraction: float) -> int:
    """How many of n fakes G learns from at this step (top-k training): all at step 0, falling
    linearly to final_fraction of them at half the steps, at least one."""
    if final_fraction >= 1.0 or steps <= 0:
        return n
    progress = min(1.0, step / (0.5 * steps))
    return max(1, round(n * (1.0 - (1.0 - final_fraction) * progress)))


def to_model_range(images: Tensor, image_size: int) -> Tensor:
    """[0, 1] images at any size -> [-1, 1] at image_size."""
    if images.shape[-1] != image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images * 2.0 - 1.0


class Sampler(nn.Module):
    """The inference network of a GAN: the EMA generator, plus `sample(seeds, labels)`."""

    def __init__(self, generator: nn.Module, nz: int, conditional: bool, truncation: float | None = None,
                 latent_categories: int = 0):
        super().__init__()
        self.G, self.nz, self.conditional = generator, nz, conditional
        self.truncation = truncation  # None: plain N(0, I) noise; t: |z| > t redrawn (seeded_noise)
        self.latent_categories = latent_categories  # > 0: a one-hot code drawn from the seed after z

    @torch.no_grad()
    def sample(self, seeds: list[int], labels: list[int] | None = None) -> Tensor:
        """(N, C, H, W) in [0, 1], one image per seed (and label, for a conditional model)."""
        device = next(self.G.parameters()).device
        z = seeded_noise(seeds, self.nz, self.truncation, self.latent_categories).to(device)
        if self.conditional:
            if labels is None or len(labels) != len(seeds):
                raise ValueError("a conditional generator needs one label per seed")
            images = self.G(z, torch.as_tensor(labels, dtype=torch.long, device=device))
        else:
            images = self.G(z)
        return images.float().add(1).div(2).clamp(0, 1)

    @torch.no_grad()
    def code_rows(self, per_code: int) -> Tensor:
        """One row per value of the categorical code, the same noise (seeds 0..per_code-1) down
        each column: what each code value learned to draw. (codes * per_code, C, H, W) in [0, 1]."""
        device = next(self.G.parameters()).device
        z = seeded_noise(list(range(per_code)), self.nz, self.truncation)
        codes = torch.arange(self.latent_categories).repeat_interleave(per_code)
        images = self.G(with_code(z.repeat(self.latent_categories, 1), codes, self.latent_categories).to(device))
        return images.float().add(1).div(2).clamp(0, 1)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.G(z, labels) if self.conditional else self.G(z)


def set_truncation(net: nn.Module, truncation: float | None, family: str | None = None) -> None:
    """Make a loaded generator sample with truncated noise (None: leave it as it is); refused for
    a generator that has no such option (a VAE)."""
    if truncation is None:
        return
    if not isinstance(net, Sampler):
        raise StageError(f"noise truncation is a GAN option; a {family or type(net).__name__} generator "
                         "does not take it")
    if truncation <= 0:
        raise StageError(f"truncation must be > 0, got {truncation}")
    net.truncation = float(truncation)


class GANTrainer(Trainer):
    """Alternating GAN training: one D step on real and fake images (with the lazy R1 penalty on
    the real ones when tp.r1_gamma), then one G step against the updated D on the same fakes (only
    the ones D rates most real when tp.g_topk < 1), then the EMA update of G. With a categorical
    latent code (latent_categories > 0, unconditional models), D also returns code logits and both
    steps add info_weight x the cross-entropy of the fakes' codes (InfoGAN). Both learning rates
    follow lr_factor (tp.decay_fraction), a pure function of the step. All noise (z, codes, fake
    labels) comes from torch's global RNG, which the training loop checkpoints."""

    loss_names = ("loss_D", "loss_G", "D_real", "D_fake")

    def __init__(self, tp, generator: nn.Module, discriminator: nn.Module, device: torch.device,
                 channels: int, num_classes: int = 0, latent_categories: int = 0):
        super().__init__()
        self.tp, self.device, self.channels, self.num_classes = tp, device, channels, num_classes
        self.conditional = num_classes > 0
        self.latent_categories = latent_categories
        if latent_categories:
            self.loss_names = GANTrainer.loss_names + ("loss_info",)
        G, D = generator.to(device), discriminator.to(device)
        self.nets = {"G": G, "D": D}
        self.extra = {"G_ema": copy.deepcopy(G).eval().requires_grad_(False)}
        betas = (tp.beta1, tp.beta2)
        self.opts = {"G": torch.optim.Adam(G.parameters(), lr=tp.lr_g, betas=betas),
                     "D": torch.optim.Adam(D.parameters(), lr=tp.lr_d, betas=betas)}

    def _d(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(logits, code logits or None)."""
        out = self.nets["D"](x, y) if self.conditional else self.nets["D"](x)
        return out if isinstance(out, tuple) else (out, None)

    def _g(self, z: Tensor, y: Tensor | None) -> Tensor:
        return self.nets["G"](z, y) if self.conditional else self.nets["G"](z)

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tp = self.tp
        real = to_model_range(batch["image"], tp.image_size)
        n = real.shape[0]
        z = torch.randn(n, tp.nz, device=self.device)
        if self.latent_categories:
            code = torch.randint(0, self.latent_categories, (n,), device=self.device)
            z = with_code(z, code, self.latent_categories)
        y_real = batch["label"] if self.conditional else None
        y_fake = torch.randint(0, self.num_classes, (n,), device=self.device) if self.conditional else None

        factor = lr_factor(self.step, tp.steps, tp.decay_fraction)
        set_lr({"G": self.opts["G"]}, tp.lr_g * factor)
        set_lr({"D": self.opts["D"]}, tp.lr_d * factor)
        fake = self._g(z, y_fake)
        r1 = tp.r1_gamma > 0 and self.step % tp.r1_every == 0
        if r1:
            real.requires_grad_(True)
        (d_real, _), (d_fake, code_fake) = self._d(real, y_real), self._d(fake.detach(), y_fake)
        loss_d = d_loss(tp.loss, d_real, d_fake)
        if code_fake is not None:
            loss_d = loss_d + tp.info_weight * F.cross_entropy(code_fake, code)
        if r1:
            grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            loss_d = loss_d + tp.r1_gamma / 2 * tp.r1_every * grad.pow(2).flatten(1).sum(1).mean()
        self.opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.opts["D"].step()

        d_fake_for_g, code_for_g = self._d(fake, y_fake)
        keep = topk_count(n, self.step, tp.steps, tp.g_topk)
        if keep < n:
            d_fake_for_g = d_fake_for_g.topk(keep).values
        loss_g = g_loss(tp.loss, d_fake_for_g)
        if code_for_g is not None:
            loss_info = F.cross_entropy(code_for_g, code)
            loss_g = loss_g + tp.info_weight * loss_info
        self.opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.opts["G"].step()

        ema_update(self.extra["G_ema"], self.modules()["G"], ema_decay_at(self.step, tp.ema_decay))
        losses = {"loss_D": loss_d.detach(), "loss_G": loss_g.detach(),
                  "D_real": d_real.detach().mean(), "D_fake": d_fake.detach().mean()}
        if code_for_g is not None:
            losses["loss_info"] = loss_info.detach()
        return losses

    def inference_network(self) -> nn.Module:
        """The EMA generator, its BatchNorm statistics recomputed for its own weights when
        tp.ema_bn_recalibrate (training is unaffected: the next step copies G's again)."""
        G_ema = self.extra["G_ema"]
        if self.tp.ema_bn_recalibrate:
            recalibrate_bn(G_ema, self.tp.nz, self.num_classes, latent_categories=self.latent_categories)
        return Sampler(G_ema, self.tp.nz, self.conditional, latent_categories=self.latent_categories)

    def preview(self, count: int = 100) -> Tensor:
        """A fixed-noise grid of the EMA generator (seeds 0..count-1; labels 0..9 row by row)."""
        labels = [i * self.num_classes // count for i in range(count)] if self.conditional else None
        return self.inference_network().sample(list(range(count)), labels)

    def sidecar(self) -> dict:
        return {"conditional": self.conditional, "num_classes": self.num_classes, "channels": self.channels}
