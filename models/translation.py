"""What the translation families (pix2pix, cyclegan) share: the PatchGAN discriminator, the GAN
losses, the history pool of generated images and the inference network (`Translator`: [0,1] in,
[0,1] out, any size, a2b or b2a). The linear learning-rate decay is models/family.py's lr_factor."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DIRECTIONS = ("a2b", "b2a")


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=False)


def upsample_conv(cin: int, cout: int, kind: str, bias: bool, kernel: int = 4) -> nn.Module:
    """2x upsampling: the papers' transposed conv (4x4 for pix2pix, 3x3 + output padding for
    CycleGAN), or "resize": nearest-neighbour 2x then a 3x3 conv, which cannot make the
    checkerboard pattern uneven overlap gives transposed convs (Odena et al. 2016)."""
    if kind == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias))
    if kernel == 3:
        return nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1, bias=bias)
    return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """N(0, 0.02) conv weights, N(1, 0.02) norm scales (both papers' init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def start_as_identity(generator: nn.Module) -> None:
    """A residual generator's last conv at zero: its change is zero, its output its input."""
    last = [m for m in generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


class PatchGAN(nn.Module):
    """Isola et al.'s PatchGAN: n_layers stride-2 4x4 convs (width doubling from ndf, capped at
    8 ndf), one stride-1 conv, then a 1-channel map of real/fake logits, one per patch."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias), norm_layer(norm, ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def features_and_logits(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """The activation after each LeakyReLU (what feature matching compares) and the logits."""
        features = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                features.append(x)
        return features, x


def feature_matching_loss(fake: list[Tensor], real: list[Tensor]) -> Tensor:
    """pix2pixHD's (Wang et al. 2018) L1 between D's features of the generated and the real
    output, averaged over D's layers; the real side is a fixed target."""
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake, real, strict=True)) / len(fake)


def gan_loss(kind: str, logits: Tensor, real: bool) -> Tensor:
    """"lsgan": least squares against 1 / 0 (CycleGAN); "bce": the original GAN loss (pix2pix)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if kind == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


class ImagePool(nn.Module):
    """Shrivastava et al.'s history of generated images, as CycleGAN uses it: D sees, for each new
    fake, either that fake or (half the time, once the pool is full) an older one, which it replaces.
    The pool is buffers, so the training loop checkpoints it with the modules; its random choices
    come from torch's global RNG, which the loop checkpoints too: a resumed run is bit-identical."""

    def __init__(self, size: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *image_shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, fakes: Tensor) -> Tensor:
        if self.size == 0:
            return fakes
        out = []
        for image in fakes.detach():
            n = int(self.count)
            if n < self.size:
                self.images[n].copy_(image)
                self.count += 1
                out.append(image)
            elif torch.rand(()).item() > 0.5:
                i = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[i].clone())
                self.images[i].copy_(image)
            else:
                out.append(image)
        return torch.stack(out)


def to_model_range(x: Tensor) -> Tensor:
    return x * 2.0 - 1.0


def to_image_range(y: Tensor) -> Tensor:
    return y.add(1).div(2).clamp(0, 1)


class Translator(nn.Module):
    """The inference network of a translation family: (N,3,H,W) in [0,1] -> the same size in the
    other domain, in [0,1]. `direction` picks the generator (pix2pix has only a2b). Inputs whose
    sides are not multiples of the generator's stride are padded by replicating their edge and
    the result cropped back, so any size works (and tiles need no particular size)."""

    def __init__(self, generators: dict[str, nn.Module], multiple: int, direction: str = "a2b"):
        super().__init__()
        self.generators = nn.ModuleDict(generators)
        self.multiple = multiple
        self.direction = direction

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(self.generators.keys())

    def set_direction(self, direction: str) -> Translator:
        if direction not in self.generators:
            raise ValueError(f"this model translates {' and '.join(self.directions)} only, not {direction}")
        self.direction = direction
        return self

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = -h % m, -w % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        y = self.generators[self.direction](to_model_range(x))
        return to_image_range(y)[..., :h, :w]
