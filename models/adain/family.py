"""adain: arbitrary style transfer (Huang & Belongie 2017). One decoder, trained on (photo crop,
painting crop) pairs, stylizes after any painting at run time: models/adain/network.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.adain.network import AdaINNet, adain, build_adain, default_widths, mean_std, probe, resolve_layers
from models.adain.params import STYLE_SIZE, TrainParams
from models.encoders import build_encoder
from models.family import Family, TrainInputs, Trainer
from models.losses import mean_std as stacked_mean_std
from models.losses import style_loss


class AdaINTrainer(Trainer):
    loss_names = ("total", "content", "style")

    def __init__(self, tp: TrainParams, inputs: TrainInputs):
        super().__init__()
        self.tp = tp
        self.layer, self.style_layers = resolve_layers(tp.encoder, tp.layer, tp.style_layers)
        probe_encoder = build_encoder(tp.encoder, [self.layer], pretrained=False)  # shapes only
        self.channels, self.stride = probe(probe_encoder, self.layer)
        self.widths = list(tp.widths) or default_widths(self.stride)
        net = build_adain(tp.encoder, self.layer, self.style_layers, self.channels, self.stride, self.widths,
                          pretrained=True).to(inputs.device)
        if inputs.painting is not None:  # the network's default painting (the first held-out one)
            with torch.no_grad():
                mean, std = net.style_of(inputs.painting(STYLE_SIZE).to(inputs.device))
            net.style_mean.copy_(mean)
            net.style_std.copy_(std)
        self.net = net
        self.nets = {"decoder": net.decoder}
        self.opts = {"decoder": torch.optim.Adam(net.decoder.parameters(), lr=tp.lr)}

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        content, style = batch["image"], batch["style"]
        encoder, layer = self.net.encoder, self.layer
        with torch.no_grad():
            style_feats = encoder(style)
            target = adain(encoder(content)[layer], *mean_std(style_feats[layer]))
            style_stats = {n: stacked_mean_std(style_feats[n]) for n in self.style_layers}
        out = self.nets["decoder"](target)[..., : content.shape[-2], : content.shape[-1]]
        feats = {n: f.float() for n, f in encoder(out).items()}  # losses in fp32 under the loop's bf16 autocast
        target = target.float()
        style_stats = {n: t.float() for n, t in style_stats.items()}
        # both terms relative to the target's own magnitude, as models/losses.py's style loss is
        c = self.tp.content_weight * F.mse_loss(feats[layer], target) / target.pow(2).mean().clamp_min(1e-12)
        s = self.tp.style_weight * style_loss(feats, style_stats, self.style_layers, "meanstd")
        total = c + s
        opt = self.opts["decoder"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return {"total": total.detach(), "content": c.detach(), "style": s.detach()}

    def inference_network(self) -> AdaINNet:
        return self.net

    def sidecar(self) -> dict:
        return {"encoder": self.tp.encoder, "layer": self.layer, "style_layers": self.style_layers,
                "channels": self.channels, "stride": self.stride, "widths": self.widths,
                "style_size": self.tp.style_size}


def build(sidecar: dict) -> AdaINNet:
    return build_adain(sidecar["encoder"], sidecar["layer"], sidecar["style_layers"], int(sidecar["channels"]),
                       int(sidecar["stride"]), [int(w) for w in sidecar["widths"]], pretrained=False)


FAMILY = Family("adain", AdaINTrainer, build, shared_code=("models/encoders.py", "models/losses.py"))
