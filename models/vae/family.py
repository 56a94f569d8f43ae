"""vae: a convolutional variational autoencoder (Kingma & Welling 2014) with a Bernoulli
likelihood and KL warm-up. The saved network is the whole VAE: `sample` decodes prior noise,
`reconstruct` and `interpolate` serve the report, `elbo` the evaluation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.family import Family, TrainInputs, Trainer, seeded_noise
from models.vae.network import VAE
from models.vae.params import TrainParams


def resize(images: Tensor, image_size: int) -> Tensor:
    if images.shape[-1] != image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images


def neg_elbo_terms(net: VAE, target: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image reconstruction NLL and KL(q(z|x) || N(0, I)), both in nats, shape (N,)."""
    logits, mu, logvar = net(target, eps)
    nll = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
    return nll, kl


class VAEModel(VAE):
    """The VAE with the runner's interface ([0, 1] images in and out)."""

    def __init__(self, tp: TrainParams, channels: int):
        super().__init__(tp.zdim, tp.width, tp.hidden, channels, tp.image_size)
        self.image_size, self.binarize = tp.image_size, tp.binarize

    @torch.no_grad()
    def sample(self, seeds: list[int], labels: list[int] | None = None) -> Tensor:
        """Decoder means for z ~ N(0, I), one z per seed."""
        device = next(self.parameters()).device
        return torch.sigmoid(self.decoder(seeded_noise(seeds, self.zdim).to(device)))

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """The decoder mean at the posterior mean."""
        mu, _ = self.encoder(resize(images, self.image_size) * 2 - 1)
        return torch.sigmoid(self.decoder(mu))

    @torch.no_grad()
    def interpolate(self, images: Tensor, steps: int = 10) -> Tensor:
        """Straight lines between the posterior means of pairs (0-1, 2-3, ...): one row of `steps`
        images per pair."""
        mu, _ = self.encoder(resize(images, self.image_size) * 2 - 1)
        t = torch.linspace(0, 1, steps, device=mu.device)[None, :, None]
        z = (mu[0::2, None] * (1 - t) + mu[1::2, None] * t).reshape(-1, mu.shape[1])
        return torch.sigmoid(self.decoder(z))

    @torch.no_grad()
    def elbo(self, images: Tensor, batch_size: int = 1000, seed: int = 0) -> float:
        """Mean ELBO in nats per image (higher is better) on held-out [0, 1] images: one fixed
        binarisation and one z sample per image, from a CPU generator seeded with `seed`."""
        device = next(self.parameters()).device
        gen, total = torch.Generator().manual_seed(seed), 0.0
        for i in range(0, len(images), batch_size):
            x = resize(images[i:i + batch_size], self.image_size)
            if self.binarize:
                x = torch.bernoulli(x, generator=gen)
            eps = torch.randn(x.shape[0], self.zdim, generator=gen)
            nll, kl = neg_elbo_terms(self, x.to(device), eps.to(device))
            total += (nll + kl).sum().item()
        return -total / len(images)


class VAETrainer(Trainer):
    loss_names = ("loss", "neg_elbo", "recon", "kl", "beta")

    def __init__(self, tp: TrainParams, inputs: TrainInputs):
        super().__init__()
        self.tp, self.device, self.channels = tp, inputs.device, inputs.channels
        vae = VAEModel(tp, inputs.channels).to(inputs.device)
        self.nets = {"vae": vae}
        self.opts = {"vae": torch.optim.Adam(vae.parameters(), lr=tp.lr)}

    def beta(self) -> float:
        warm = self.tp.kl_warmup_steps
        return 1.0 if warm <= 0 else min(1.0, self.step / warm)

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = resize(batch["image"], self.tp.image_size)
        if self.tp.binarize:
            x = torch.bernoulli(x)
        eps = torch.randn(x.shape[0], self.tp.zdim, device=self.device)
        nll, kl = neg_elbo_terms(self.nets["vae"], x, eps)
        beta = self.beta()
        loss = (nll + beta * kl).mean()
        self.opts["vae"].zero_grad(set_to_none=True)
        loss.backward()
        self.opts["vae"].step()
        return {"loss": loss.detach(), "neg_elbo": (nll + kl).mean().detach(), "recon": nll.mean().detach(),
                "kl": kl.mean().detach(), "beta": torch.tensor(beta)}

    def inference_network(self) -> nn.Module:
        return self.modules()["vae"]

    def preview(self, count: int = 100) -> Tensor:
        return self.inference_network().sample(list(range(count)))

    def sidecar(self) -> dict:
        return {"conditional": False, "num_classes": 0, "channels": self.channels}


def build(sidecar: dict) -> VAEModel:
    return VAEModel(TrainParams.model_validate(sidecar["train"]), int(sidecar["channels"]))


FAMILY = Family("vae", VAETrainer, build, shared_code=("models/gan_params.py", "models/layers.py"))
