"""Translation quality sweep: train pix2pix / cyclegan settings on emoji pairs and score each on the
held-out pairs, entirely through the project's own stages (no model or metric code of its own):

- prepare: the emoji folders (`make emoji-pairs`: A = Noto, B = Twemoji, same names) go through
  download's `sync_set` and preprocess's `preprocess` once, as a `paired` dataset `emoji`; an
  `emoji-unpaired` dataset is the same train/val folders read as `unpaired` (CycleGAN then sees
  an A image and a random B image; the held-out pairs keep their names, so the evaluation scores
  cyclegan on the same pairs as pix2pix);
- run NAME --family F --set key=value ...: tasks.train.train (the train stage), tasks.infer.run_stage
  (the infer stage: val/A through the bulk engine to PNG) and tasks.evaluate.evaluate_translator
  (the evaluate stage's translation scores: L1 / PSNR / SSIM against the target beside the
  input-as-prediction baseline, fd_effnetl0 / kid_effnetl0 to held-out B beside the inputs' and
  the real-vs-real floor, cycle L1), each under ROOT (a project-shaped tree: data/processed,
  data/models, data/infer, metrics/train); wall and CPU seconds of the training are measured here.
  One JSON line per run is appended to ROOT/results.jsonl; a 16-row input | output | target grid
  goes to ROOT/grids/NAME.png and the loss log to ROOT/metrics/train/NAME.tsv. `run --score-only`
  re-scores a model already trained under NAME.
- table: the results as a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/translate_sweep.py prepare
    OMP_NUM_THREADS=1 python benchmarks/translate_sweep.py run p2p-resize --family pix2pix \\
        --set steps=3000 --set upsample=resize
    OMP_NUM_THREADS=1 python benchmarks/translate_sweep.py run l1-resize --family pix2pix \\
        --set steps=3000 --set upsample=resize --set gan_weight=0
    OMP_NUM_THREADS=1 python benchmarks/translate_sweep.py run cg --family cyclegan \\
        --set steps=1500 --set upsample=resize --set n_blocks=4
    python benchmarks/translate_sweep.py table

The rest of the project's settings (preprocess seed, stylize, evaluate) come from params.yaml;
--val-fraction (default 0.2) sets the held-out share (0.2 of the 3,774 distinct pairs: 755).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stylepipe.config import read_raw, validate  # noqa: E402

EMOJI = REPO.parent / "main" / ".cache" / "emoji" if not (REPO / ".cache/emoji").is_dir() else REPO / ".cache/emoji"
FAMILY_DATA = {"pix2pix": "emoji", "cyclegan": "emoji-unpaired"}


def make_params(emoji: Path, val_fraction: float, models: dict | None = None):
    """params.yaml's settings with the two emoji datasets and the given models only."""
    raw = read_raw(REPO / "params.yaml")
    raw["datasets"] = {"emoji": {"kind": "paired", "sources": [{"url": str(emoji)}]},
                       "emoji-unpaired": {"kind": "unpaired", "sources": [{"url": str(emoji)}]}}
    raw["models"] = models or {"placeholder": {"family": "pix2pix", "dataset": "emoji"}}
    raw["preprocess"] = {**raw.get("preprocess", {}), "val_fraction": val_fraction, "workers": 1}
    # one process, one thread: run-only settings (what is computed does not change)
    raw["stylize"] = {**raw.get("stylize", {}), "workers": 0, "parallel_batches": 1, "threads": 1}
    raw["evaluate"] = {**raw.get("evaluate", {}), "device": "cpu"}
    return validate(raw, "translate_sweep")


def prepare(root: Path, emoji: Path, val_fraction: float) -> None:
    from tasks.download import sync_set
    from tasks.preprocess import preprocess

    params = make_params(emoji, val_fraction)
    raw_root, processed = root / "data/raw/datasets", root / "data/processed"
    sync_set("dataset emoji", params.datasets["emoji"].sources, raw_root / "emoji", params.download)
    counts = preprocess(params, "emoji", raw_root, processed)
    print("preprocess:", counts)
    view = processed / "emoji-unpaired"  # the same split, read as two unpaired domains
    shutil.rmtree(view, ignore_errors=True)
    for split in ("train", "val"):
        (view / split).mkdir(parents=True)
        for d in "AB":
            (view / split / d).symlink_to((processed / "emoji" / split / d).resolve(), target_is_directory=True)
    for split in ("train", "val"):
        print(split, len(list((processed / "emoji" / split / "A").glob("*.png"))), "pairs")


def parse_value(text: str):
    return yaml.safe_load(text)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(root: Path, emoji: Path, val_fraction: float, name: str, family: str, sets: list[str], note: str,
        score_only: bool = False) -> dict:
    import torch

    from tasks import evaluate as ev_stage
    from tasks import infer, train
    from tasks.evaluation import distributions
    from tasks.evaluation import translation as tr

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in sets)}
    overrides.setdefault("device", "cpu")
    dataset = FAMILY_DATA[family]
    params = make_params(emoji, val_fraction, {name: {"family": family, "dataset": dataset, "train": overrides}})
    if not (root / "data/processed" / dataset / "val").is_dir():
        raise SystemExit(f"{root}/data/processed/{dataset}: run `prepare` first")
    for old in (root / "data/infer" / name, root / ".cache/infer" / name):
        shutil.rmtree(old, ignore_errors=True)
    model_dir = root / "data/models" / name
    if score_only:  # re-score a model an earlier `run` trained (its times: ROOT/times/NAME.json)
        sidecar = json.loads((model_dir / "model.json").read_text())
        times = json.loads((root / "times" / f"{name}.json").read_text())
        wall, cpu, load0, load1 = times["wall_s"], times["cpu_s"], *times["load_1min"]
    else:
        shutil.rmtree(model_dir, ignore_errors=True)
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), cpu_seconds()
        sidecar = train.train(params, name, train.Paths.for_model(params, name, root), fresh=True, keep_seconds=True)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        load1 = os.getloadavg()[0]
        (root / "times").mkdir(exist_ok=True)
        (root / "times" / f"{name}.json").write_text(json.dumps(
            {"wall_s": round(wall, 1), "cpu_s": None if cpu is None else round(cpu, 1), "load_1min": [round(load0, 2), round(load1, 2)]}))

    infer.run_stage(name, params, root)
    paths = ev_stage.Paths.under(root)
    device = torch.device("cpu")
    result = ev_stage.evaluate_translator(name, params.model(name), params.evaluate, paths, device,
                                          distributions.effnet_extractor(device))
    val = root / "data/processed" / dataset / "val"
    names = sorted(p.stem for p in (val / "A").glob("*.png"))[:16]
    grid = tr.write_grid([(val / "A" / f"{n}.png", root / "data/infer" / name / f"{n}.png", val / "B" / f"{n}.png")
                          for n in names], root / "grids" / f"{name}.png")
    row = {"name": name, "family": family, "settings": overrides, "note": note,
           "train": params.model(name).train.model_dump(exclude={"device", "workers", "threads", "log_every",
                                                                  "checkpoint_every", "channels_last", "compile"}),
           "steps": sidecar["steps"], "wall_s": round(wall, 1), "cpu_s": None if cpu is None else round(cpu, 1),
           "load_1min": [round(load0, 2), round(load1, 2)], "final_losses": sidecar["final_losses"],
           "metrics": result["metrics"], "grid": str(grid)}
    with open(root / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))
    return row


def table(root: Path) -> str:
    rows = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines() if line.strip()]
    out = ["| run | family | settings | steps | wall / CPU min | L1 | PSNR | SSIM | fd_effnetl0 | kid | cycle L1 |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    if rows:
        m = rows[0]["metrics"]
        out.append(f"| input as prediction ({m.get('pairs')} pairs) | | | | | {m['identity_l1']:.3f} | "
                   f"{m['identity_psnr']:.2f} | {m['identity_ssim']:.3f} | {m['fd_effnetl0_inputs']:.0f} "
                   f"(floor {m['floor_fd_effnetl0']:.0f}) | {m['kid_effnetl0_inputs']:.3f} | |")
    for r in rows:
        m = r["metrics"]
        settings = ", ".join(f"{k} {v}" for k, v in r["settings"].items() if k not in ("steps", "device"))
        cycle = f"{m['cycle_l1']:.3f}" if "cycle_l1" in m else ""
        out.append(f"| {r['name']} | {r['family']} | {settings} | {r['steps']} | {r['wall_s'] / 60:.1f} / "
                   f"{r['cpu_s'] / 60 if r['cpu_s'] is not None else float('nan'):.1f} | {m['l1']:.3f} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                   f"{m['fd_effnetl0']:.0f} | {m['kid_effnetl0']:.3f} | {cycle} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=REPO / ".cache/translate-sweep")
    ap.add_argument("--emoji", type=Path, default=EMOJI, help="the folder with A/ and B/ (make emoji-pairs)")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare")
    r = sub.add_parser("run")
    r.add_argument("name")
    r.add_argument("--family", choices=sorted(FAMILY_DATA), required=True)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a train setting (YAML value)")
    r.add_argument("--note", default="")
    r.add_argument("--score-only", action="store_true",
                   help="do not train: infer and evaluate the model an earlier run of NAME trained (same --set)")
    sub.add_parser("table")
    args = ap.parse_args(argv)
    os.chdir(REPO)
    if args.command == "prepare":
        prepare(args.root, args.emoji, args.val_fraction)
    elif args.command == "run":
        run(args.root, args.emoji, args.val_fraction, args.name, args.family, args.set, args.note, args.score_only)
    else:
        print(table(args.root))


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    main()
