"""johnson: one feed-forward network per painting (Johnson et al. 2016), trained with a perceptual
loss from a frozen encoder. Images in [0,1] -> stylized images in [0,1], at any size."""
from __future__ import annotations

import torch
from torch import Tensor

from models.encoders import build_encoder, check_layers, default_layers
from models.family import Family, TrainInputs, Trainer
from models.johnson.network import DEFAULT_UPSAMPLE, LEGACY_UPSAMPLE, NETWORKS, UPSAMPLE, build_network
from models.johnson.params import TrainParams
from models.losses import PerceptualLoss
from stylepipe.errors import StageError


def resolve_layers(tp: TrainParams) -> tuple[list[str], list[str]]:
    style_default, content_default = default_layers(tp.encoder)
    style_layers = list(tp.style_layers) or style_default
    content_layers = list(tp.content_layers) or content_default
    check_layers(tp.encoder, style_layers, "train.style_layers entry")
    check_layers(tp.encoder, content_layers, "train.content_layers entry")
    unused = sorted(set(tp.style_layer_weights) - set(style_layers))
    if unused:
        raise StageError(f"train.style_layer_weights names {', '.join(map(repr, unused))}, not among the style "
                         f"layers in use: {', '.join(style_layers)}")
    return style_layers, content_layers


class JohnsonTrainer(Trainer):
    loss_names = ("total", "content", "style", "tv")

    def __init__(self, tp: TrainParams, inputs: TrainInputs):
        super().__init__()
        device, self.bf16, self.channels_last = inputs.device, inputs.bf16, inputs.channels_last
        self.style_layers, self.content_layers = resolve_layers(tp)
        self.tp = tp
        self.upsample = tp.upsample or DEFAULT_UPSAMPLE[tp.network]
        net = build_network(tp.network, self.upsample).to(device)
        net.gradient_floor = tp.output_gradient_floor
        encoder = build_encoder(tp.encoder, list(dict.fromkeys(self.style_layers + self.content_layers))).to(device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
            encoder = encoder.to(memory_format=torch.channels_last)
        painting = inputs.painting(tp.style_size).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            self.loss = PerceptualLoss(encoder, painting, self.style_layers, self.content_layers,
                                       tp.content_weight, tp.style_weight, tp.tv_weight, tp.statistic,
                                       tp.palette_weight, tp.style_layer_weights)
        self.nets = {"net": net}
        self.opts = {"net": torch.optim.Adam(net.parameters(), lr=tp.lr)}

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        content = batch["image"]
        if self.channels_last:
            content = content.contiguous(memory_format=torch.channels_last)
        with torch.autocast(content.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            losses = self.loss(self.nets["net"](content), content)
        opt = self.opts["net"]
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        return {k: v.detach() for k, v in losses.items()}

    def inference_network(self) -> torch.nn.Module:
        return self.modules()["net"]

    def sidecar(self) -> dict:
        tp = self.tp
        return {"network": tp.network, "upsample": self.upsample, "encoder": tp.encoder,
                "style_layers": self.style_layers, "content_layers": self.content_layers,
                "statistic": tp.statistic, "palette_weight": tp.palette_weight,
                "weights": {"content": tp.content_weight, "style": tp.style_weight, "tv": tp.tv_weight},
                "style_size": tp.style_size, "image_size": tp.image_size}


def build(sidecar: dict) -> torch.nn.Module:
    network = sidecar.get("network")
    if network not in NETWORKS:
        raise ValueError(f"'network' must be one of {', '.join(NETWORKS)}, got {network!r}")
    # a sidecar without `upsample` was written before the option: it describes the decoder of then
    upsample = sidecar.get("upsample", LEGACY_UPSAMPLE.get(network, DEFAULT_UPSAMPLE[network]))
    if upsample not in UPSAMPLE:
        raise ValueError(f"'upsample' must be one of {', '.join(UPSAMPLE)}, got {upsample!r}")
    return build_network(network, upsample)


FAMILY = Family("johnson", JohnsonTrainer, build, shared_code=("models/encoders.py", "models/losses.py"))
