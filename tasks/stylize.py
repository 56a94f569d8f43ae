"""Stage `stylize@<style>`: apply the trained network to every held-out image.

    python -m tasks.stylize --style NAME
      data/processed/val/*.png + data/models/NAME  ->  data/stylized/NAME/<stem>.<format>

It runs the bulk engine (tasks/stylize_engine.py, also behind `stylepipe stylize`) with the
`stylize` section of params.yaml. The output folder holds the images and nothing else, so DVC's
hash of it depends on the images alone: the stage's ledger lives in .cache/stylize/NAME/ (git- and
DVC-ignored), temporary files are removed at the end, and outputs of inputs no longer in the val
split are deleted. A kill leaves the folder resumable: a re-run skips what the ledger has done.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from stylepipe.config import Params, load_params
from stylepipe.errors import StageError
from stylepipe.stage import run_main
from tasks.stylize_engine import stylize
from tasks.stylize_plan import Job, ModelSpec, Summary, plan
from tasks.stylize_sources import RESERVED_NAME

log = logging.getLogger("stylepipe.stylize")

VAL_DIR = Path("data/processed/val")
MODELS_DIR = Path("data/models")
STYLIZED_DIR = Path("data/stylized")
LEDGER_DIR = Path(".cache/stylize")


def stage_job(style: str, params: Params, root: Path = Path(".")) -> Job:
    if style not in params.styles:
        raise StageError(f"unknown style {style!r}; params.yaml has {sorted(params.styles)}")
    model_dir = root / MODELS_DIR / style
    if not (model_dir / "model.json").is_file():
        raise StageError(f"{model_dir} has no trained model: run the train stage first (dvc repro train@{style})")
    val_dir = root / VAL_DIR
    if not val_dir.is_dir():
        raise StageError(f"{val_dir} is missing: run the preprocess stage first")
    sp = params.stylize
    spec = ModelSpec(str(model_dir), label=style, strength=sp.strength, preserve_colors=sp.preserve_colors)
    return Job(str(val_dir), root / STYLIZED_DIR / style, (spec,), sp, root / LEDGER_DIR / style / "ledger.sqlite")


def prune_outputs(job: Job) -> list[Path]:
    """Delete files in the output folder that are not outputs of the current inputs (a val image
    that left the split); returns them."""
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


def run_stage(style: str, params: Params, root: Path = Path(".")) -> Summary:
    job = stage_job(style, params, root)
    summary = stylize(job, progress=True)
    for line in summary.lines():
        log.info("%s", line)
    for path in prune_outputs(job):
        log.info("removed %s: its input is no longer in %s", path, VAL_DIR)
    if summary.pending:
        raise StageError(f"{summary.pending} outputs were not made; run the stage again")
    if summary.failed_fraction > params.stylize.max_failed_fraction:
        raise StageError(f"{summary.failed} of {summary.done + summary.failed} held-out images could not be "
                         f"stylized (stylize.max_failed_fraction={params.stylize.max_failed_fraction}); "
                         f"the reasons are above and in {summary.ledger}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.stylize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", required=True, help="style name from params.yaml `styles`")
    args = parser.parse_args(argv)
    run_main("stylize", lambda: run_stage(args.style, load_params()))


if __name__ == "__main__":
    main()
