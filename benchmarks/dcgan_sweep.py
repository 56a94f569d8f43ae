"""DCGAN sweep: train one dcgan on MNIST through the project's own training loop (tasks/train.py
driving models/dcgan) with the given train settings, and score its EMA generator every
--score-every steps with the evaluate stage's own code (tasks/evaluation/generation.py's measure():
the judge's confident fraction (max p >= 0.9) and class shares, fd_effnetl0), with plain noise, and
the final model once more per --truncation value (the Sampler's truncated noise, models/family.py
seeded_noise).

    python benchmarks/dcgan_sweep.py --ceiling
    python benchmarks/dcgan_sweep.py --name wide --set ngf=128 --set ndf=128 --steps 4000 \
        --score-every 1000 --truncation 1.0,0.8

--ceiling scores MNIST's real test digits exactly as samples are scored (sample i = test image i):
what the metric allows at best. Times: wall and CPU (this process) seconds of training so far, the
scoring excluded. Scoring leaves the global RNG as it found it, so a scored run trains the same
model as an unscored one. Each score is printed and appended as one JSON line to --out. Needs
data/processed/mnist (`dvc repro preprocess@mnist`), or --data another labelled dataset's folder;
one torch thread unless --threads.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import tasks.train as train_mod
from stylepipe.config import parse_override, set_in, validate
from tasks.evaluate import JUDGE_CACHE
from tasks.evaluation import distributions as dist
from tasks.evaluation import generation

DATA = Path("data/processed/mnist")  # --data: another labelled dataset preprocess wrote (e.g. fashion)
WORK = Path(".cache/dcgan-sweep")
CPU = torch.device("cpu")
SIDECAR = {"conditional": False}  # how measure() draws from an unconditional generator


class RealDigits:
    """Stands in for a generator: 'sample' i is the held-out split's image i (for --ceiling)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def sample(self, seeds: list[int], labels=None) -> torch.Tensor:
        return self.images[seeds]


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def summary(m: dict) -> str:
    return (f"confident {m['confident_fraction']:.1%}, class shares {m['class_share_min']:.1%}-"
            f"{m['class_share_max']:.1%} ({m['classes_present']} classes), fd_effnetl0 {m['fd_effnetl0']:.1f} "
            f"(floor {m['floor_fd_effnetl0']:.1f}), precision {m['precision']:.2f}, recall {m['recall']:.2f}")


def emit(row: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def ceiling(args, real: generation.RealData, extractor) -> None:
    m = generation.measure(RealDigits(real.val_x), SIDECAR, real, extractor, CPU, args.samples)
    print(f"real test digits 0..{args.samples - 1}: {summary(m)}; judge test accuracy {m['judge_test_accuracy']:.2%}")
    probs, _ = generation.judges.predict(real.judge, real.val_x)
    whole = float((probs.max(1).values >= generation.CONFIDENT).float().mean())
    print(f"all {len(real.val_x)} test digits: {whole:.1%} judged with p >= {generation.CONFIDENT}")
    emit({"name": "ceiling", **m, "confident_fraction_all_test": whole}, args.out)


def train_and_score(args, real: generation.RealData, extractor) -> None:
    train = {"steps": args.steps, "preview_every": args.score_every or args.steps,
             "checkpoint_every": 10 ** 9, "log_every": 50, "device": "cpu"}
    for assignment in args.set:
        keys, value = parse_override(assignment)
        set_in(train, keys, value)
    params = validate({"datasets": {"mnist": {"kind": "labelled", "sources": [{"url": "unused"}]}},
                       "models": {args.name: {"family": "dcgan", "dataset": "mnist", "train": train}}})
    work = WORK / args.name
    paths = train_mod.Paths(args.data, work / "inputs", work / "model", work / "logs" / "train.tsv", work / "checkpoints")
    truncations = [None] + [float(t) for t in args.truncation.split(",") if t]
    scoring = [0.0, 0.0]  # wall, CPU seconds spent scoring (taken out of the training times)
    wall0, cpu0 = clock()
    original_preview = train_mod.save_preview

    def score(trainer, path: Path) -> None:
        """At each preview (every preview_every steps and the last step): the usual grid, then scores."""
        original_preview(trainer, path)
        w, c = clock()
        rng = train_mod.rng_state()
        step = int(path.stem.split("-")[-1])
        net = trainer.inference_network()  # the EMA G, BatchNorm recalibrated: what would be saved
        for t in truncations if step == args.steps else [None]:  # truncated noise: the final model only
            net.truncation = t
            m = generation.measure(net, SIDECAR, real, extractor, CPU, args.samples)
            row = {"name": args.name, "set": args.set, "step": step, "truncation": t,
                   "train_wall_s": round(w - wall0 - scoring[0], 1), "train_cpu_s": round(c - cpu0 - scoring[1], 1),
                   "load_avg_1m": os.getloadavg()[0], **m}
            print(f"{args.name} step {step} truncation {t}: {row['train_wall_s']:.0f} s wall / "
                  f"{row['train_cpu_s']:.0f} s CPU of training: {summary(m)}", flush=True)
            emit(row, args.out)
            if step == args.steps:  # the final model's 100-sample grid, per truncation
                generation.write_grids(net, SIDECAR, real, work / f"grid-t{t}")
        net.truncation = None
        train_mod.set_rng_state(rng)
        w2, c2 = clock()
        scoring[0] += w2 - w
        scoring[1] += c2 - c

    train_mod.save_preview = score
    try:
        train_mod.train(params, args.name, paths, fresh=True)
    finally:
        train_mod.save_preview = original_preview


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ceiling", action="store_true", help="score the real test digits instead of training")
    parser.add_argument("--name", default="dcgan", help="the run's name (its folder under .cache/dcgan-sweep)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a dcgan train setting (models/dcgan/params.py), e.g. ngf=128; repeatable")
    parser.add_argument("--data", type=Path, default=DATA, help="a labelled dataset's preprocessed folder")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--score-every", type=int, default=2000, help="score every N steps (0: only at the end)")
    parser.add_argument("--truncation", default="",
                        help="comma-separated truncation values the final model is also scored with, e.g. 1.0,0.8")
    parser.add_argument("--samples", type=int, default=2000, help="samples scored (the evaluate stage draws 2000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=WORK / "results.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # train() keeps the thread count set here
    extractor = dist.effnet_extractor(CPU)
    real = generation.real_data(args.data, args.samples, extractor, CPU, JUDGE_CACHE)
    if args.ceiling:
        ceiling(args, real, extractor)
    else:
        train_and_score(args, real, extractor)


if __name__ == "__main__":
    main()
