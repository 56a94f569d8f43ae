"""The `stylepipe` command line. Every command has --help."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stylepipe.config import PARAMS_FILE, ConfigError, load_params, write_overrides


def _repo_root(path: str) -> Path:
    root = Path(path).resolve()
    if not (root / "dvc.yaml").is_file():
        raise ConfigError(f"{root} has no dvc.yaml: run from the stylepipe project root or pass --repo")
    return root


def cmd_run(args: argparse.Namespace) -> int:
    root = _repo_root(args.repo)
    if args.set:
        for change in write_overrides(root / PARAMS_FILE, args.set):
            print(f"params.yaml: {change}")
    load_params(root / PARAMS_FILE)  # fail fast, before Prefect starts, on a bad params.yaml

    from flows.pipeline import pipeline

    metrics = pipeline(repo_root=str(root), stages=args.stage or None, force=args.force)
    print("\nstylepipe run finished.")
    print(f"  stylized images: {root / 'data/stylized'}")
    print(f"  report:          {root / 'data/eval/report/index.html'}")
    print(f"  metrics:         {root / 'data/eval/metrics.json'}")
    for style, values in (metrics or {}).items():
        if isinstance(values, dict):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, (int, float)))
            print(f"  {style}: {shown}")
    return 0


def cmd_stylize(args: argparse.Namespace) -> int:
    from stylepipe.config import StylizeParams
    from tasks.stylize import stylize_folder

    params = StylizeParams(max_size=args.max_size, format=args.format, quality=args.quality, device=args.device)
    source = Path(args.source)
    if not source.is_dir():
        raise ConfigError(f"{source}: not a folder of images")
    summary = stylize_folder(Path(args.model), source, Path(args.out), params)
    print(f"wrote {len(summary.written)} images to {args.out} in {summary.seconds:.1f} s; "
          f"{len(summary.failed)} skipped")
    for path, reason in summary.failed.items():
        print(f"  skipped {path}: {reason}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from flows import nightly

    root = _repo_root(args.repo)
    schedule = load_params(root / PARAMS_FILE).schedule
    cron, timezone = args.cron or schedule.cron, args.timezone or schedule.timezone
    if args.register_only:
        deployment_id = nightly.register(root, cron, timezone)
        print(f"registered deployment stylepipe-pipeline/{nightly.DEPLOYMENT_NAME} ({deployment_id}) "
              f"cron={cron!r} timezone={timezone}")
    else:
        print(f"serving stylepipe-pipeline/{nightly.DEPLOYMENT_NAME} cron={cron!r} timezone={timezone} "
              "(Ctrl-C stops)")
        nightly.serve(root, cron, timezone)
    return 0


def cmd_dag(args: argparse.Namespace) -> int:
    from flows.dag import stage_order

    for name in stage_order(_repo_root(args.repo)):
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylepipe", description="Train style-transfer networks "
                                     "and apply them to image archives (Prefect + DVC).")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the dvc.yaml pipeline as a Prefect flow",
                         description="Run download -> preprocess -> train -> stylize -> evaluate "
                         "(stages that are up to date are skipped by DVC).")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override one parameter in params.yaml before running, like "
                     "`dvc exp run -S` (repeatable), e.g. --set train.steps=10")
    run.add_argument("--stage", action="append", metavar="NAME",
                     help="run only this stage (repeatable); a group name like 'train' selects "
                     "every train@<style>")
    run.add_argument("--force", action="store_true", help="re-run stages even when up to date")
    run.add_argument("--repo", default=".", help="project root (default: current directory)")
    run.set_defaults(func=cmd_run)

    stylize = sub.add_parser("stylize", help="stylize a folder of images with a trained model",
                             description="Apply a trained model (a data/models/<style> folder) to "
                             "every image under SOURCE, keeping the folder tree.")
    stylize.add_argument("source", help="folder of images (searched recursively)")
    stylize.add_argument("--model", required=True, help="model folder with model.safetensors + model.json")
    stylize.add_argument("--out", required=True, help="output folder")
    stylize.add_argument("--max-size", type=int, default=None, help="longest output side (default: keep size)")
    stylize.add_argument("--format", choices=["jpg", "png", "webp"], default="jpg")
    stylize.add_argument("--quality", type=int, default=92, help="JPEG/WebP quality")
    stylize.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    stylize.set_defaults(func=cmd_stylize)

    nightly = sub.add_parser("nightly", help="serve (or register) the nightly Prefect deployment",
                             description="Create the scheduled deployment of the pipeline flow and "
                             "serve its runs from this process. Schedule from params.yaml `schedule`.")
    nightly.add_argument("--cron", help="cron schedule (default: params.yaml schedule.cron)")
    nightly.add_argument("--timezone", help="time zone of the schedule (default: params.yaml)")
    nightly.add_argument("--register-only", action="store_true",
                         help="register the deployment on the Prefect API and exit (runs need a "
                         "`stylepipe nightly` or worker process to execute them)")
    nightly.add_argument("--repo", default=".", help="project root (default: current directory)")
    nightly.set_defaults(func=cmd_nightly)

    dag = sub.add_parser("dag", help="print the stage order derived from dvc.yaml")
    dag.add_argument("--repo", default=".", help="project root (default: current directory)")
    dag.set_defaults(func=cmd_dag)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"stylepipe: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
