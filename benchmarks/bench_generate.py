"""Generation throughput, two ratios measured in one run (ratios are what to read on a shared machine):

1. DCGAN training, images/s: stylepipe's training loop (tasks/train.py driving the dcgan family,
   data loader, EMA, logging and checkpoints included) against pytorch/examples' dcgan loop
   (dcgan/main.py's Generator, Discriminator, BCELoss-on-sigmoid steps, written here as that script
   writes them), same networks (DCGAN at --size px, ngf = ndf = --width), batch and size.
2. Sampling, images/s: `stylepipe sample` end to end (the bulk engine: seeds in, PNG files and
   ledger rows out; and, with --tar-size N, PNGs packed N to a tar) against the generator's forward
   pass alone on the same batch size, as the engine runs it (on the CPU, one pass per core at once).
   --rounds alternates the jobs (files, tars, files, ...); the medians are printed.

    python benchmarks/bench_generate.py --size 64 --width 64 --batch 64 --steps 30
    python benchmarks/bench_generate.py --steps 2 --samples 6000 --tar-size 1000 --rounds 3
    python benchmarks/bench_generate.py --device cuda --amp --steps 200 --samples 100000

--amp (CUDA): bf16 autocast for the plain loop and the forward-alone ceiling (the training loop's
own CUDA path is as it is configured). Data: MNIST from data/processed/mnist when it is there,
else random images (throughput does not depend on the pixels).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn

from bench_stylize import OtherLoad  # this script's folder is on sys.path when it runs
from stylepipe.config import validate
from stylepipe.devices import pick_device


# --------------------------------------------------------------------------- pytorch/examples dcgan


def examples_networks(nz: int, ngf: int, ndf: int, nc: int) -> tuple[nn.Module, nn.Module]:
    """dcgan/main.py's Generator and Discriminator (64 px), as that script defines them."""
    G = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
    return G, D


def examples_loop(args, device: torch.device) -> float:
    """images/s of dcgan/main.py's training loop on one batch already on the device."""
    G, D = (m.to(device) for m in examples_networks(args.nz, args.width, args.width, 1))
    bce = nn.BCELoss()

    def criterion(p, label):  # autocast refuses BCELoss (the script's loss on a sigmoid): in fp32
        with torch.autocast(device.type, enabled=False):
            return bce(p.float(), label)
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(args.batch, 1, 64, 64, device=device) * 2 - 1
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)

    def step():
        with amp:
            D.zero_grad()
            label = torch.full((args.batch,), 1.0, device=device)
            errD_real = criterion(D(real).view(-1).float(), label)
            errD_real.backward()
            fake = G(torch.randn(args.batch, args.nz, 1, 1, device=device))
            label.fill_(0.0)
            errD_fake = criterion(D(fake.detach()).view(-1).float(), label)
            errD_fake.backward()
            optD.step()
            G.zero_grad()
            label.fill_(1.0)
            errG = criterion(D(fake).view(-1).float(), label)
            errG.backward()
            optG.step()
        _ = (errD_real + errD_fake).item(), errG.item()  # the script prints these every step

    return timed(step, args.steps, args.warmup, device) * args.batch


def timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


# --------------------------------------------------------------------------- stylepipe


def labelled_data(folder: Path, size: int = 2048) -> Path:
    """data/processed/mnist if present (linked), else random labelled images in preprocess's format."""
    real = Path("data/processed/mnist")
    if (real / "train.safetensors").is_file():
        return real
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (size, 28, 28, 1), dtype=np.uint8),
              "labels": (np.arange(size) % 10).astype(np.int64)}
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.safetensors", "val.safetensors"):
        save_file(arrays, str(folder / name))
    return folder


def stylepipe_training(args, work: Path, device: torch.device) -> tuple[float, Path]:
    """images/s of tasks/train.py training a dcgan of the same networks; returns the model too."""
    import tasks.train as train_mod

    params = validate({
        "datasets": {"d": {"kind": "labelled", "sources": [{"url": "x"}]}},
        "models": {"g": {"family": "dcgan", "dataset": "d", "train": {
            "steps": args.warmup + args.steps, "batch_size": args.batch, "image_size": args.size,
            "ngf": args.width, "ndf": args.width, "nz": args.nz, "device": device.type,
            "log_every": 10, "checkpoint_every": 10 ** 9, "preview_every": 0}}}})
    paths = train_mod.Paths(labelled_data(work / "data"), work / "inputs", work / "model", work / "log.tsv",
                            work / "ckpt")
    steps_done: list[float] = []
    original = train_mod._on_step
    train_mod._on_step = lambda step: steps_done.append(time.perf_counter())
    try:
        train_mod.train(params, "g", paths)
    finally:
        train_mod._on_step = original
    timed_span = steps_done[-1] - steps_done[args.warmup - 1] if args.warmup else steps_done[-1] - steps_done[0]
    return args.steps * args.batch / timed_span, work / "model"


def sampling(args, model_dir: Path, work: Path, device: torch.device) -> tuple[dict[int, list[float]], float]:
    """({tar size (0: files): end-to-end images/s through the bulk engine, per round}, forward-alone
    images/s) at --sample-batch."""
    from models.weights import load_model
    from stylepipe.config import StylizeParams
    from tasks.bulk.engine import stylize
    from tasks.bulk.plan import Job, ModelSpec, default_ledger
    from tasks.bulk.sources import seeds_spec

    rates: dict[int, list[float]] = {size: [] for size in ([0, args.tar_size] if args.tar_size else [0])}
    for _ in range(args.rounds):
        for tar_size in rates:
            out = work / "samples"
            shutil.rmtree(out, ignore_errors=True)
            params = StylizeParams(format="png", max_size=None, device=device.type, batch_size=args.sample_batch,
                                   workers=args.workers, tar_size=tar_size)
            job = Job(seeds_spec(args.samples, 0), out, (ModelSpec(str(model_dir)),), params, default_ledger(out))
            start = time.perf_counter()
            summary = stylize(job, progress=False)
            rates[tar_size].append(summary.done / (time.perf_counter() - start))

    net, _ = load_model(model_dir, device)
    steps = max(3, args.samples // args.sample_batch // 4)
    return rates, forward_alone(net.eval(), args.sample_batch, steps, device, args.amp)


def forward_alone(net, batch: int, steps: int, device: torch.device, amp: bool) -> float:
    """Images/s of the generator's forward pass alone, as the engine runs it: on the CPU its passes
    at once (lean.cpu_passes: one per core, one thread each), each sampling its own batches; on
    CUDA one pass. (Before session 21 this timed one pass on the CPU too, against the engine's two:
    half the ceiling.)"""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.bulk.lean import cpu_passes

    seeds = list(range(batch))

    def sample() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            net.sample(seeds).cpu()

    if device.type == "cuda":
        return timed(sample, steps, 1, device) * batch
    passes, threads = cpu_passes(None, None)

    def one_pass(n: int) -> None:
        torch.set_num_threads(threads)  # (a thread's own OpenMP team: runners.StyleModels._one_pass_threads)
        for _ in range(n):
            sample()

    with ThreadPoolExecutor(passes) as pool:
        list(pool.map(one_pass, [1] * passes))  # warm-up
        start = time.perf_counter()
        list(pool.map(one_pass, [steps] * passes))
        return passes * steps * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, choices=[64], help="image side (pytorch/examples' is 64)")
    ap.add_argument("--width", type=int, default=64, help="ngf = ndf (pytorch/examples' default 64)")
    ap.add_argument("--nz", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--sample-batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="PNG encoders of the bulk engine")
    ap.add_argument("--tar-size", type=int, default=0, help="also sample into tars of this many PNGs")
    ap.add_argument("--rounds", type=int, default=1, help="sampling jobs of each kind, alternated")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"device": str(device), "threads": torch.get_num_threads(), "size": args.size,
               "width": args.width, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp, OtherLoad() as load:
        work = Path(tmp)
        results["train_examples_img_s"] = examples_loop(args, device)
        results["train_stylepipe_img_s"], model_dir = stylepipe_training(args, work, device)
        rates, results["sample_forward_img_s"] = sampling(args, model_dir, work, device)
    results["sample_end_to_end_img_s"] = statistics.median(rates[0])
    results["sample_rounds_img_s"] = {("files" if size == 0 else f"tar{size}"): r for size, r in rates.items()}
    results["other_load_cores"] = round(load.cores, 2)
    print(f"device {results['device']}, {results['threads']} threads; DCGAN {args.size} px, width {args.width}, "
          f"batch {args.batch}")
    print(f"training  pytorch/examples loop          {results['train_examples_img_s']:8.1f} img/s   1.00")
    print(f"training  stylepipe train loop           {results['train_stylepipe_img_s']:8.1f} img/s   "
          f"{results['train_stylepipe_img_s'] / results['train_examples_img_s']:.2f}")
    print(f"sampling  generator forward              {results['sample_forward_img_s']:8.1f} img/s   1.00")
    for kind, per_round in results["sample_rounds_img_s"].items():
        median = statistics.median(per_round)
        print(f"sampling  stylepipe sample ({kind:7s}) {median:8.1f} img/s   "
              f"{median / results['sample_forward_img_s']:.2f}   rounds: {', '.join(f'{r:.1f}' for r in per_round)}")
    print(f"other processes used {results['other_load_cores']} cores meanwhile")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
