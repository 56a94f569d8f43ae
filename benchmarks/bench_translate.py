"""Translation throughput, ratios measured in one run (ratios are what to read on a shared machine):

1. Training, images/s, per family (pix2pix, cyclegan): stylepipe's training loop (tasks/train.py
   driving the family: PNG data stream with jitter, logging, LR schedule) against a plain PyTorch
   loop of the same networks, written as junyanz/pytorch-CycleGAN-and-pix2pix's
   optimize_parameters writes it (D frozen during the G step), on one batch already in memory.
2. Bulk translation, images/s, per --backends: `stylepipe translate` end to end (the bulk engine:
   PNG files in, PNG files and ledger rows out) against the network alone on the same images, as
   the engine runs it (its passes, threads and runtime: bench_stylize.py's ceiling), and the share
   of the job's time the network was busy. Each backend's job runs twice: the figure is the second
   (its time includes the job's start: worker processes, model load; --images sets how much that
   weighs), and the first job's extra seconds (the ONNX export, auto's calibration) are printed.
   --tar-size N: the outputs packed N to a tar instead (tasks/bulk/tar_output.py).

    python benchmarks/bench_translate.py --size 64 --batch 8 --steps 20
    python benchmarks/bench_translate.py --device cuda --amp --size 256 --batch 16 --steps 100

Data: photo-like paired PNGs (the networks' speed does not depend on the pixels; PNG's does).
--amp (CUDA): bf16 autocast for the plain loops and the forward-alone ceiling.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench_generate import timed  # this script's folder is on sys.path when it runs
from bench_stylize import OtherLoad, photo_like
from models import registry
from models.family import TrainInputs
from stylepipe.config import validate
from stylepipe.devices import pick_device
from tasks.bulk.backends import EXACT_ONNX_RUNTIMES


def settings(family: str, args) -> dict:
    common = {"image_size": args.size, "batch_size": args.batch, "ngf": args.width, "ndf": args.width}
    if family == "pix2pix":
        return {**common, "num_downs": int(np.log2(args.size))}
    return {**common, "n_blocks": args.blocks}


def write_pairs(folder: Path, count: int, size: int) -> Path:
    """Photo-like pairs (bench_stylize.photo_like): PNG encodes and decodes them at a photo's cost;
    random noise, incompressible, cost zlib several times more."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for d in "AB":
            (folder / split / d).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        for d in "AB":
            Image.fromarray(photo_like(rng, size)).save(folder / ("val" if i < count // 4 else "train") / d / f"{i:05d}.png")
    return folder


def set_requires_grad(nets, flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad = flag


def plain_loop(family: str, args, device: torch.device) -> float:
    """images/s of junyanz's optimize_parameters on the family's own networks."""
    tp = registry.validate_params(family, settings(family, args), {})[0]
    trainer = registry.load(family).make_trainer(tp, TrainInputs(device))  # only its networks are used
    n = trainer.nets
    a = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1
    b = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)
    mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()
    bce = torch.nn.BCEWithLogitsLoss()

    if family == "pix2pix":
        G, D = n["G"], n["D"]
        optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))

        def step():
            with amp:
                fake = G(a)
                set_requires_grad([D], True)
                optD.zero_grad()
                pf, pr = D(torch.cat([a, fake.detach()], 1)), D(torch.cat([a, b], 1))
                loss_d = 0.5 * (bce(pf.float(), torch.zeros_like(pf.float())) + bce(pr.float(), torch.ones_like(pr.float())))
                loss_d.backward()
                optD.step()
                set_requires_grad([D], False)
                optG.zero_grad()
                pf = D(torch.cat([a, fake], 1)).float()
                loss_g = bce(pf, torch.ones_like(pf)) + 100 * l1(fake.float(), b)
                loss_g.backward()
                optG.step()
    else:
        GA, GB, DA, DB = n["G_A"], n["G_B"], n["D_A"], n["D_B"]
        optG = torch.optim.Adam(itertools.chain(GA.parameters(), GB.parameters()), lr=2e-4, betas=(0.5, 0.999))
        optD = torch.optim.Adam(itertools.chain(DA.parameters(), DB.parameters()), lr=2e-4, betas=(0.5, 0.999))

        def gan(p, real):
            p = p.float()
            return mse(p, torch.ones_like(p) if real else torch.zeros_like(p))

        def step():
            with amp:
                fb, fa = GA(a), GB(b)
                ra, rb = GB(fb), GA(fa)
                set_requires_grad([DA, DB], False)
                optG.zero_grad()
                loss_g = (gan(DA(fb), True) + gan(DB(fa), True) + 10 * (l1(ra, a) + l1(rb, b))
                          + 5 * (l1(GA(b), b) + l1(GB(a), a)))
                loss_g.backward()
                optG.step()
                set_requires_grad([DA, DB], True)
                optD.zero_grad()  # (a plain loop without the image pool)
                loss_d = 0.5 * (gan(DA(b), True) + gan(DA(fb.detach()), False)) + \
                    0.5 * (gan(DB(a), True) + gan(DB(fa.detach()), False))
                loss_d.backward()
                optD.step()

    return timed(step, args.steps, args.warmup, device) * args.batch


def stylepipe_training(family: str, args, data: Path, work: Path, device: torch.device) -> tuple[float, Path]:
    import tasks.train as train_mod

    kind = registry.info(family).data
    params = validate({"datasets": {"d": {"kind": kind, "sources": [{"url": "x"}]}},
                       "models": {"m": {"family": family, "dataset": "d", "train": {
                           **settings(family, args), "steps": args.warmup + args.steps, "device": device.type,
                           "log_every": 10, "checkpoint_every": 10 ** 9}}}})
    paths = train_mod.Paths(data, work / "inputs", work / family, work / f"{family}.tsv", work / "ckpt" / family)
    stamps: list[float] = []
    original = train_mod._on_step
    train_mod._on_step = lambda step: stamps.append(time.perf_counter())
    try:
        train_mod.train(params, "m", paths)
    finally:
        train_mod._on_step = original
    span = stamps[-1] - stamps[max(args.warmup - 1, 0)]
    return (args.steps - (0 if args.warmup else 1)) * args.batch / span, work / family


def translating(model_dir: Path, data: Path, work: Path, args, device: torch.device
                ) -> dict[str, tuple[float, float, float, float]]:
    """Per backend: (end-to-end images/s of `stylepipe translate` on val/A, the network alone's
    images/s, the share of the job's time the network was busy, the extra seconds of the model's
    first job); end to end is the second job, the one every later job is like. The network alone:
    on the CPU with the engine's layout and runtime (bench_stylize.ceiling), on CUDA the
    generator's forward pass."""
    from bench_stylize import ceiling
    from models.weights import load_model
    from stylepipe.config import StylizeParams
    from tasks.bulk.engine import stylize
    from tasks.bulk.plan import Job, ModelSpec, default_ledger

    results, ceilings = {}, {}  # auto's ceiling: the faster runtime's network alone
    paths = sorted((data / "val" / "A").glob("*.png"))
    for backend in args.backends if device.type == "cpu" else ["torch"]:
        seconds = []
        for run in ("first", "again"):  # the first job of a model makes its ONNX export (and auto's choice)
            out = work / f"out-{model_dir.name}-{backend}-{run}"
            params = StylizeParams(format="png", max_size=None, device=device.type, workers=args.workers, backend=backend,
                                   tar_size=args.tar_size)
            job = Job(str(data / "val" / "A"), out, (ModelSpec(str(model_dir), direction="a2b"),), params, default_ledger(out))
            start = time.perf_counter()
            summary = stylize(job, progress=False)
            seconds.append(time.perf_counter() - start)
        end_to_end = summary.done / seconds[1]
        if device.type == "cpu":
            exact = ["torch", *EXACT_ONNX_RUNTIMES]  # auto's candidates: its ceiling is the fastest
            for runtime in (exact if backend == "auto" else [backend]):
                if runtime not in ceilings:
                    ceilings[runtime] = ceiling(model_dir, paths, 0, None, None, runtime, direction="a2b")
            alone = max(ceilings[r] for r in exact) if backend == "auto" else ceilings[backend]
        else:
            net = load_model(model_dir, device)[0].eval()
            x = torch.rand(1, 3, args.size, args.size, device=device)
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                alone = timed(lambda: net(x).cpu(), max(5, summary.done // 2), 2, device)
        results[backend] = (end_to_end, alone, summary.run.network_busy, seconds[0] - seconds[1])
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=int, default=32, help="ngf = ndf (the CPU default)")
    ap.add_argument("--blocks", type=int, default=6, help="cyclegan residual blocks")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--images", type=int, default=200, help="paired PNGs written (a quarter are translated)")
    ap.add_argument("--workers", type=int, default=2, help="decode/encode processes of the bulk engine")
    ap.add_argument("--families", default="pix2pix,cyclegan")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "auto"],
                    choices=["torch", "onnxruntime", "openvino", "openvino-bf16", "auto"], help="runtimes of the translate runs (CPU)")
    ap.add_argument("--tar-size", type=int, default=0, help="translate into tars of this many PNGs (0: files)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"device": str(device), "threads": torch.get_num_threads(), "size": args.size,
                     "width": args.width, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp, OtherLoad() as load:
        work = Path(tmp)
        # ONNX exports and auto's choices in a cache of this run's own, so that every run's first job
        # makes them (its "first job" seconds), as a new machine's would
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        data = write_pairs(work / "data", args.images, args.size)
        for family in args.families.split(","):
            r = results[family] = {}
            r["train_plain_img_s"] = plain_loop(family, args, device)
            r["train_stylepipe_img_s"], model_dir = stylepipe_training(family, args, data, work, device)
            r["translate"] = translating(model_dir, data, work, args, device)
    results["other_load_cores"] = round(load.cores, 2)
    print(f"device {results['device']}, {results['threads']} threads; {args.size} px, width {args.width}, batch {args.batch}"
          + (f"; outputs in tars of {args.tar_size}" if args.tar_size else ""))
    for family in args.families.split(","):
        r = results[family]
        print(f"{family:9s} training  plain PyTorch loop      {r['train_plain_img_s']:8.1f} img/s   1.00")
        print(f"{family:9s} training  stylepipe train loop    {r['train_stylepipe_img_s']:8.1f} img/s   "
              f"{r['train_stylepipe_img_s'] / r['train_plain_img_s']:.2f}")
        for backend, (end_to_end, alone, busy, first) in r["translate"].items():
            print(f"{family:9s} translate {backend:13s} network alone {alone:8.1f} img/s   1.00")
            busy_share = "n/a" if busy is None else f"{busy:.0%}"
            print(f"{family:9s} translate {backend:13s} end to end    {end_to_end:8.1f} img/s   "
                  f"{end_to_end / alone:.2f}   (the network busy {busy_share} of the time; the model's "
                  f"first job {first:+.1f} s)")
    print(f"other processes used {results['other_load_cores']} cores meanwhile")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
