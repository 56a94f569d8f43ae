"""Stage `infer@<model>`: run a trained model over its held-out data, through the bulk engine.

    python -m tasks.infer --model NAME
      image families (johnson, gatys):  data/processed/<dataset>/val/*.png -> data/infer/NAME/<stem>.<format>
      sample families (dcgan, cgan, vae): `infer.count` samples -> data/infer/NAME/[<label>/]<seed>.png
      translation families (pix2pix, cyclegan): data/processed/<dataset>/val/A/*.png (B for
        `infer.direction: b2a`) -> data/infer/NAME/<stem>.png, at their own size

It runs the bulk engine (tasks/bulk/engine.py, also behind `stylepipe stylize` and `stylepipe
sample`) with the `stylize` section of params.yaml. The output folder holds the images and nothing
else, so DVC's hash of it depends on the images alone: the stage's ledger lives in
.cache/infer/NAME/ (git- and DVC-ignored), temporary files are removed at the end, and outputs of
inputs no longer wanted (a val image that left the split, a lower count) are deleted. A kill leaves
the folder resumable: a re-run skips what the ledger has done.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from models import registry
from models.sidecar import SIDECAR_FILE, num_classes, read_sidecar
from stylepipe.config import Params, load_params
from stylepipe.errors import StageError
from stylepipe.stage import run_main
from tasks.bulk.engine import stylize
from tasks.bulk.memory import keep_freed_memory
from tasks.bulk.plan import Job, ModelSpec, Summary, plan
from tasks.bulk.sources import RESERVED_NAME, seeds_spec

log = logging.getLogger("stylepipe.infer")

PROCESSED_DIR = Path("data/processed")
MODELS_DIR = Path("data/models")
OUT_DIR = Path("data/infer")
LEDGER_DIR = Path(".cache/infer")


def stage_job(model: str, params: Params, root: Path = Path(".")) -> Job:
    entry = params.model(model)
    info = registry.info(entry.family)
    model_dir = root / MODELS_DIR / model
    if not (model_dir / SIDECAR_FILE).is_file():
        raise StageError(f"{model_dir} has no trained model: run the train stage first (dvc repro train@{model})")
    sp = params.stylize
    untextured = sp.model_copy(update={"texture_scale": 1.0, "work_size": None})  # Gatys and generators
    out, ledger = root / OUT_DIR / model, root / LEDGER_DIR / model / "ledger.sqlite"
    if info.runner == "sample":
        ip = entry.infer
        source = seeds_spec(ip.count, ip.seed, list(ip.labels) or _all_labels(model_dir))
        spec = ModelSpec(str(model_dir), label=model, truncation=ip.truncation)
        return Job(source, out, (spec,), untextured.model_copy(update={"format": "png"}), ledger)
    val_dir = root / PROCESSED_DIR / entry.dataset / "val"
    if info.translates:  # translation: the held-out images of the input domain, as PNG
        direction = entry.infer.direction
        val_dir = val_dir / ("A" if direction == "a2b" else "B")
        if not val_dir.is_dir():
            raise StageError(f"{val_dir} is missing: run the preprocess stage first")
        spec = ModelSpec(str(model_dir), label=model, direction=direction)
        return Job(str(val_dir), out, (spec,), sp.model_copy(update={"format": "png", "max_size": None}), ledger)
    if not val_dir.is_dir():
        raise StageError(f"{val_dir} is missing: run the preprocess stage first")
    if entry.family == "gatys":  # the painting stored in the model folder, optimised per image
        from models.gatys.optimize import GatysConfig

        spec = ModelSpec(str(model_dir), label=model, strength=sp.strength, preserve_colors=sp.preserve_colors,
                         gatys=GatysConfig(**{**entry.infer.model_dump(), "sizes": tuple(entry.infer.sizes)}))
        return Job(str(val_dir), out, (spec,), untextured, ledger, gatys_max_inputs=None)
    spec = ModelSpec(str(model_dir), label=model, strength=sp.strength, preserve_colors=sp.preserve_colors)
    return Job(str(val_dir), out, (spec,), sp, ledger, gatys_max_inputs=None)


def _all_labels(model_dir: Path) -> list[int]:
    """Every class of a conditional model (from its sidecar); [] for an unconditional one."""
    sidecar = read_sidecar(model_dir)
    return list(range(num_classes(sidecar))) if sidecar.get("conditional") else []


def prune_outputs(job: Job) -> list[Path]:
    """Delete files in the output folder that are not outputs of the current inputs; returns them."""
    expected = set(plan(job, readonly=True).expected)
    removed = []
    for dirpath, dirnames, filenames in os.walk(job.out):
        rel_dir = os.path.relpath(dirpath, job.out)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != RESERVED_NAME]
        for name in filenames:
            relpath = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if relpath not in expected:
                (Path(dirpath) / name).unlink()
                removed.append(Path(dirpath) / name)
    return removed


def run_stage(model: str, params: Params, root: Path = Path(".")) -> Summary:
    job = stage_job(model, params, root)
    summary = stylize(job, progress=True)
    for line in summary.lines():
        log.info("%s", line)
    for path in prune_outputs(job):
        log.info("removed %s: its input is no longer wanted", path)
    if summary.pending:
        raise StageError(f"{summary.pending} outputs were not made; run the stage again")
    if summary.failed_fraction > params.stylize.max_failed_fraction:
        raise StageError(f"{summary.failed} of {summary.done + summary.failed} inputs failed "
                         f"(stylize.max_failed_fraction={params.stylize.max_failed_fraction}); "
                         f"the reasons are above and in {summary.ledger}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model name from params.yaml `models`")
    args = parser.parse_args(argv)
    keep_freed_memory()  # before any thread has its own malloc arena (tasks/bulk/memory.py)
    run_main("infer", lambda: run_stage(args.model, load_params()))


if __name__ == "__main__":
    main()
