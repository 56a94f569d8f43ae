"""AdaIN throughput at one size, in one run (ratios are what to read on a shared machine):

  (a) AdaIN end to end: `stylize()` from JPEG files to JPEG files through the bulk engine with an
      adain model and a painting (its statistics computed once per job);
  (b) the AdaIN network alone: encoder + AdaIN + decoder on a pre-decoded tensor;
  (c) the fast per-style network (models/johnson "fast") alone, and (d) end to end (torch, and
      the `auto` backend, which may pick onnxruntime; AdaIN has no ONNX export, so it runs on torch);
  (e) naoto0804/pytorch-AdaIN's test.py per image, its loop body as that script runs it (PIL open
      of content and style, Resize(size), VGG to relu4_1 on both, AdaIN, its decoder, save_image),
      with random weights (timing does not depend on them): --reference names a checkout.

    python benchmarks/bench_adain.py --size 512 --count 20 --reference /path/to/pytorch-AdaIN

Networks have random (seeded) decoder weights; the Lite0 encoder is the real one.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_stylize import OtherLoad, generate_jpegs  # this script's folder is on sys.path when it runs


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def save_models(folder: Path) -> tuple[Path, Path]:
    from models.adain.network import DEFAULT_LAYERS, build_adain, default_widths, probe
    from models.encoders import build_encoder
    from models.johnson.network import build_network
    from models.weights import save_model

    torch.manual_seed(0)
    layer, style_layers = DEFAULT_LAYERS["efficientnet_lite0"]
    channels, stride = probe(build_encoder("efficientnet_lite0", [layer], pretrained=False), layer)
    adain = build_adain("efficientnet_lite0", layer, style_layers, channels, stride, default_widths(stride),
                        pretrained=True)
    save_model(folder / "adain", adain, {"family": "adain", "encoder": "efficientnet_lite0", "layer": layer,
                                         "style_layers": style_layers, "channels": channels, "stride": stride,
                                         "widths": default_widths(stride)})
    save_model(folder / "fast", build_network("fast"), {"network": "fast", "style": "fast", "steps": 0})
    return folder / "adain", folder / "fast"


def end_to_end(src: Path, out: Path, model: Path, painting: Path | None, count: int, backend: str = "torch") -> float:
    from stylepipe.config import StylizeParams
    from tasks.bulk.engine import stylize
    from tasks.bulk.plan import Job, ModelSpec, default_ledger

    from models.adain.params import AdainControls

    shutil.rmtree(out, ignore_errors=True)
    adain = AdainControls(((str(painting), 1.0),)) if painting else None
    job = Job(str(src), out, (ModelSpec(str(model), adain=adain),),
              StylizeParams(max_size=None, workers=2, backend=backend), default_ledger(out))
    summary = stylize(job, progress=False)
    assert summary.done == count, summary.job_line()
    return summary.run.rate


def reference_per_image(repo: Path, content: Path, style: Path, size: int, out: Path, repeats: int) -> float:
    """Seconds per image of pytorch-AdaIN test.py's loop body (one content, one style)."""
    sys.path.insert(0, str(repo))
    net = importlib.import_module("net")
    function = importlib.import_module("function")
    from PIL import Image
    from torchvision import transforms
    from torchvision.utils import save_image

    decoder, vgg = net.decoder.eval(), net.vgg.eval()
    vgg = torch.nn.Sequential(*list(vgg.children())[:31])
    tf = transforms.Compose([transforms.Resize(size), transforms.ToTensor()])

    def one():
        c = tf(Image.open(str(content))).unsqueeze(0)
        s = tf(Image.open(str(style))).unsqueeze(0)
        with torch.no_grad():
            feat = function.adaptive_instance_normalization(vgg(c), vgg(s))
            output = decoder(feat)  # alpha 1: test.py's blend is the identity
        save_image(output.cpu(), str(out))

    return timed(one, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--count", type=int, default=20, help="images for the end-to-end runs")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the network-alone rows")
    parser.add_argument("--painting", default="assets/styles/swirls.jpg")
    parser.add_argument("--reference", type=Path, help="a checkout of naoto0804/pytorch-AdaIN (net.py, function.py)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from models.adain.network import stylize
    from models.weights import load_model
    from tasks.data.datasets import load_style_image

    work = Path(tempfile.mkdtemp(prefix="bench-adain-"))
    try:
        adain_dir, fast_dir = save_models(work / "models")
        src = work / "src"
        generate_jpegs(src, args.count, args.size)
        rows = {}
        threads = torch.get_num_threads()
        with OtherLoad() as load:
            net, _ = load_model(adain_dir)
            fast, _ = load_model(fast_dir)
            x = torch.rand(1, 3, args.size, args.size)
            with torch.inference_mode():
                style = net.style_of(load_style_image(Path(args.painting), args.size))
                rows["adain network alone"] = 1 / timed(lambda: stylize(net, x, [(style, 1.0)]), args.repeats)
                rows["  of which encoder"] = 1 / timed(lambda: net.encode(x), args.repeats)
                rows["fast johnson network alone"] = 1 / timed(lambda: fast(x), args.repeats)
            rows["adain end to end"] = end_to_end(src, work / "out-adain", adain_dir, Path(args.painting), args.count)
            rows["fast johnson end to end"] = end_to_end(src, work / "out-fast", fast_dir, None, args.count)
            rows["fast johnson end to end, backend auto"] = end_to_end(src, work / "out-fast-auto", fast_dir, None,
                                                                       args.count, backend="auto")
            if args.reference:
                torch.set_num_threads(os.cpu_count() or 1)  # as test.py runs: torch's default, every core
                rows["pytorch-AdaIN test.py per image"] = 1 / reference_per_image(
                    args.reference, next(src.glob("*.jpg")), Path(args.painting), args.size, work / "ref.jpg",
                    max(2, args.repeats // 2))
        print(f"{args.size}x{args.size}, cpu, {threads} torch threads for the network rows; "
              f"other processes used {load.cores:.1f} cores on average")
        for name, rate in rows.items():
            print(f"  {name:36s} {rate:7.2f} images/s  ({1000 / rate:7.0f} ms/image)")
        e2e, fast_e2e = rows["adain end to end"], rows["fast johnson end to end"]
        print(f"  adain end to end vs fast johnson end to end: {fast_e2e / e2e:.2f}x the time per image "
              f"({rows['fast johnson end to end, backend auto'] / e2e:.2f}x vs its auto backend)")
        print(f"  adain network vs fast johnson network: "
              f"{rows['fast johnson network alone'] / rows['adain network alone']:.2f}x the time per image")
        if args.reference:
            print(f"  pytorch-AdaIN test.py vs adain end to end: "
                  f"{e2e / rows['pytorch-AdaIN test.py per image']:.1f}x the time per image")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
