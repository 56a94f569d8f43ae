"""The `stylepipe` command line. Every command has --help."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from stylepipe.config import BACKENDS, DEFAULT_MAX_PIXELS, PARAMS_FILE, ConfigError, load_params, write_overrides


def _repo_root(path: str) -> Path:
    root = Path(path).resolve()
    if not (root / "dvc.yaml").is_file():
        raise ConfigError(f"{root} has no dvc.yaml: run from the stylepipe project root or pass --repo")
    return root


def cmd_run(args: argparse.Namespace) -> int:
    root = _repo_root(args.repo)
    # Everything that can be checked is checked before params.yaml changes or Prefect starts.
    if args.stage:
        _check_stages(root, args.stage)
    if args.set:
        for change in write_overrides(root / PARAMS_FILE, args.set, check=_check_schedule):
            print(f"params.yaml: {change}")
    _check_schedule(load_params(root / PARAMS_FILE))

    from flows.pipeline import QualityGateBlocked, pipeline

    try:
        metrics = pipeline(repo_root=str(root), stages=args.stage or None, force=args.force)
    except QualityGateBlocked as e:
        print(f"\nstylepipe run: quality gate: {e} (the candidates and the report are kept: "
              f"{root / 'data/eval/report/index.html'})", file=sys.stderr)
        return 3
    except RuntimeError as e:
        print(f"\nstylepipe run failed: {e}", file=sys.stderr)
        return 1
    print("\nstylepipe run finished.")
    print(f"  model outputs:   {root / 'data/infer'}")
    print(f"  report:          {root / 'data/eval/report/index.html'}")
    print(f"  metrics:         {root / 'metrics/metrics.json'}")
    for style, values in (metrics or {}).items():
        if isinstance(values, dict):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, (int, float)))
            print(f"  {style}: {shown}")
    return 0


def _check_stages(root: Path, wanted: list[str]) -> None:
    from flows.dag import select_stages, stage_order

    try:
        select_stages(stage_order(root), wanted)
    except ValueError as e:
        raise ConfigError(f"--stage: {e}") from None


def _check_schedule(params) -> None:
    """schedule.cron is only used by `nightly`, but a bad one is refused on every run, not at 2 am."""
    from flows.nightly import check_cron

    check_cron(params.schedule.cron, params.schedule.timezone)


def cmd_sample(args: argparse.Namespace) -> int:
    """Draw --count images from a generator through the bulk engine: (model, seed, label) is the
    ledger's identity, so a job is exactly-once and resumable like stylization."""
    from models import registry
    from models.sidecar import num_classes, read_sidecar
    from stylepipe.errors import StageError
    from tasks.bulk.plan import Job, ModelSpec, default_ledger
    from tasks.bulk.sources import seeds_spec

    model = Path(args.model)
    try:
        sidecar = read_sidecar(model)
        info = registry.info(sidecar.get("family", "johnson"))
        classes = num_classes(sidecar)
    except (StageError, KeyError) as e:
        raise ConfigError(f"{model}: not a trained model folder ({e})") from None
    if info.runner != "sample":
        raise ConfigError(f"{model}: a {info.name} model, not a generator (dcgan, cgan, vae)")
    if args.count < 0 or args.seed < 0:
        raise ConfigError("--count and --seed must be whole numbers >= 0")
    check_out(args.out)
    check_limit(args.limit)
    try:
        labels = [int(x) for x in args.labels.split(",")] if args.labels else []
    except ValueError:
        raise ConfigError(f"--labels {args.labels}: comma-separated class numbers, e.g. 0,3,7") from None
    if labels and not sidecar.get("conditional"):
        raise ConfigError(f"--labels: {model} is not a conditional model")
    if any(not 0 <= y < classes for y in labels):
        raise ConfigError(f"--labels: this model's classes are 0..{classes - 1}")
    if sidecar.get("conditional") and not labels:
        labels = list(range(classes))
    out = Path(args.out)
    params = bulk_params(format="png", workers=args.workers, device=args.device, max_size=None,
                         batch_size=256 if args.batch_size is None else args.batch_size, tar_size=args.tar_size)
    if args.truncation is not None and args.truncation <= 0:
        raise ConfigError("--truncation must be > 0")
    spec = ModelSpec(str(model), truncation=args.truncation)
    job = Job(seeds_spec(args.count, args.seed, labels), out, (spec,), params, default_ledger(out))
    return run_bulk_job(job, args, "sample")  # any failed sample fails the job (max_failed_fraction 0)


def cmd_stylize(args: argparse.Namespace) -> int:
    from stylepipe.errors import StageError
    from tasks.bulk.plan import Job, ModelSpec, RunStats, default_ledger, plan, summarize
    from tasks.bulk.remote import is_remote

    if args.adain_style or args.style_manifest:
        if args.gatys_style or not args.model or len(args.model) != 1:
            raise ConfigError("--adain-style and --style-manifest need exactly one --model (an adain model "
                              "folder) and no --gatys-style")
        if args.style and not args.adain_style:
            raise ConfigError("--style goes with --adain-style")
    elif args.style or args.mask or args.alpha is not None:
        raise ConfigError("--style, --mask and --alpha go with --adain-style or --style-manifest")
    elif bool(args.model) == bool(args.gatys_style):
        raise ConfigError("give --model (trained model folders) or --gatys-style (a painting), not both")
    if args.gatys_max_inputs < 0:
        raise ConfigError(f"--gatys-max-inputs {args.gatys_max_inputs}: must be 0 (no cap) or more")
    if args.gatys_style and (args.texture_scale != 1 or args.work_size is not None):
        raise ConfigError("--texture-scale and --work-size are for trained models, not --gatys-style "
                          "(its --gatys-size sets the size it paints at)")
    paths = args.model or [args.gatys_style]
    gatys = _gatys_bulk_config(args) if args.gatys_style else None

    def per_model(values: list, name: str) -> list:
        if len(values) not in (1, len(paths)):
            raise ConfigError(f"{name}: give one value for all models or one per --model ({len(paths)})")
        return values * len(paths) if len(values) == 1 else values

    check_out(args.out)
    check_limit(args.limit)
    settings = {k: getattr(args, k) for k in (
        "max_size", "format", "quality", "device", "batch_size", "workers", "parallel_batches", "threads", "layout",
        "texture_scale", "work_size", "backend", "codec", "compile", "tile_above", "tile_size", "tile_overlap", "max_pixels", "max_input_bytes", "max_failed_fraction",
        "shard_size", "tar_size")}
    params = bulk_params(**settings)
    strengths = per_model(args.strength, "--strength")
    given = args.preserve_colors  # None: not given; []: the flag alone, meaning every model
    colors = per_model(["no"] if given is None else given or ["yes"], "--preserve-colors")
    for strength in strengths:
        if not 0 <= strength <= 1:
            raise ConfigError(f"--strength {strength}: must be between 0 and 1")
    adain = _adain_controls(args) if args.adain_style or args.style_manifest else None
    models = tuple(ModelSpec(path, strength=strength, preserve_colors=keep == "yes", gatys=gatys, adain=adain)
                   for path, strength, keep in zip(paths, strengths, colors))
    out = args.out if is_remote(args.out) else Path(args.out)  # a folder, or s3://... (tasks/bulk/remote.py)
    job = Job(args.source, out, models, params, Path(args.ledger) if args.ledger else default_ledger(out),
              gatys_max_inputs=args.gatys_max_inputs or None)
    if args.dry_run:
        try:
            p = plan(job, resume=not args.no_resume, limit=args.limit, readonly=True)
        except StageError as e:
            print(f"stylepipe stylize: {e}", file=sys.stderr)
            return 1
        print(f"dry run: {len(p.items)} inputs ({p.outputs_to_make} outputs) to stylize, "
              f"{p.finished['done']} outputs already done, {p.limited} inputs beyond --limit")
        print(summarize(p, RunStats()).job_line())
        return 0
    return run_bulk_job(job, args, "stylize")


def run_bulk_job(job, args: argparse.Namespace, command: str) -> int:
    """Run `job` in this process (or as the Prefect bulk flow: --prefect, --dask-address), print
    its summary, and return the exit code: 1 when it failed or more of it failed than allowed."""
    from stylepipe.errors import StageError
    from tasks.bulk.memory import keep_freed_memory

    keep_freed_memory()  # first, before any thread has its own malloc arena (tasks/bulk/memory.py)
    from tasks.bulk.engine import stylize

    resume = not getattr(args, "no_resume", False)
    try:
        if args.dask_address or args.prefect:
            from flows.bulk import run_bulk
            summary = run_bulk(job, resume=resume, limit=args.limit, dask_address=args.dask_address)
        else:
            summary = stylize(job, resume=resume, limit=args.limit, progress=not args.quiet)
    except StageError as e:
        print(f"stylepipe {command}: {e}", file=sys.stderr)
        return 1
    verb = {"translate": "translated", "sample": "sampled"}.get(command)
    for line in summary.lines():
        print(line.replace("stylized", verb, 1) if verb else line)
    allowed = job.params.max_failed_fraction
    if summary.failed_fraction > allowed:
        print(f"stylepipe {command}: {summary.failed} of {summary.done + summary.failed} outputs failed, more "
              f"than --max-failed-fraction {allowed}", file=sys.stderr)
        return 1
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    """Translate every image in SOURCE with a pix2pix or cyclegan model, through the bulk engine:
    (input, model, direction) is the ledger's identity, so a job is resumable and exactly-once."""
    from models import registry
    from models.sidecar import directions, read_sidecar
    from stylepipe.errors import StageError
    from tasks.bulk.plan import Job, ModelSpec, default_ledger

    model = Path(args.model)
    try:
        sidecar = read_sidecar(model)
        info = registry.info(sidecar.get("family", "johnson"))
        translates = directions(sidecar) if info.translates else []
    except (StageError, KeyError) as e:
        raise ConfigError(f"{model}: not a trained model folder ({e})") from None
    if not info.translates:
        raise ConfigError(f"{model}: a {info.name} model, not a translation model (pix2pix, cyclegan)")
    if args.direction not in translates:
        raise ConfigError(f"--direction {args.direction}: this {info.name} model translates {' and '.join(translates)} only")
    check_out(args.out)
    check_limit(args.limit)
    settings = {k: getattr(args, k) for k in ("max_size", "format", "quality", "device", "batch_size", "workers",
                                              "layout", "backend", "codec", "compile", "tile_above", "tile_size", "tile_overlap",
                                              "max_failed_fraction", "tar_size")}
    params = bulk_params(**settings)
    out = Path(args.out)
    job = Job(args.source, out, (ModelSpec(str(model), direction=args.direction),), params, default_ledger(out))
    return run_bulk_job(job, args, "translate")


def bulk_params(**settings):
    """StylizeParams from a command's options; a refused value is a one-line ConfigError naming the option."""
    from pydantic import ValidationError

    from stylepipe.config import StylizeParams

    try:
        return StylizeParams(**settings)
    except ValidationError as e:
        raise ConfigError("; ".join(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}"
                                    for err in e.errors())) from None


def check_out(out: str) -> None:
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder (outputs go into a folder)")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit {limit}: must be 0 or more")


def cmd_ledger(args: argparse.Namespace) -> int:
    """What a bulk job did, from its ledger: counts, and why each failure failed."""
    from tasks.bulk.ledger import read_rows, report_csv, report_lines
    from tasks.bulk.plan import default_ledger

    path = Path(args.out)
    if path.is_dir():
        path = default_ledger(path)
    if not path.is_file():
        raise ConfigError(f"{args.out}: no ledger there (give a --out folder of stylize/sample, or a ledger file)")
    rows = read_rows(path, failed_only=args.failed)
    if args.csv:
        report_csv(rows, sys.stdout)
        return 0
    print(f"ledger: {path}")
    for line in report_lines(rows):
        print(line)
    return 0


def _adain_controls(args: argparse.Namespace):
    """--adain-style P1 [--style P2:W ...]: P2.. get their weights, P1 the rest of 1. With --mask:
    P1 goes to the mask's white region, P2 (weight optional) to its black one, else none.
    --style-manifest: each input it names gets its own painting (--adain-style: the others')."""
    from models.adain.params import AdainControls

    others = []
    for item in args.style or []:
        path, sep, weight = item.rpartition(":")
        if not sep or not path:
            if not args.mask:
                raise ConfigError(f"--style {item}: give PAINTING:WEIGHT (e.g. {item}:0.3)")
            path, weight = item, "1"
        try:
            others.append((path, float(weight)))
        except ValueError:
            raise ConfigError(f"--style {item}: the weight after ':' must be a number") from None
    first = 1.0 if args.mask else 1.0 - sum(w for _, w in others)
    if first < 0:
        raise ConfigError(f"--style weights add up to {1 - first:g}: at most 1 (--adain-style gets the rest)")
    paintings = ((args.adain_style, first), *others) if args.adain_style else ()
    try:
        return AdainControls(paintings, alpha=1.0 if args.alpha is None else args.alpha, mask=args.mask,
                             style_size=args.adain_style_size, manifest=args.style_manifest)
    except ValueError as e:
        raise ConfigError(f"--adain-style: {e}") from None


def _gatys_bulk_config(args: argparse.Namespace):
    from models.gatys.optimize import GatysConfig
    from stylepipe.errors import StageError
    from tasks.tools.gatys import parse_sizes

    try:
        return GatysConfig(sizes=parse_sizes(args.gatys_size), steps=args.gatys_steps)
    except StageError as e:
        raise ConfigError(f"--gatys-size/--gatys-steps: {e}") from None


def cmd_gatys(args: argparse.Namespace) -> int:
    """One photo optimised towards one painting. A bad option is a usage error (exit 2), as in the
    other commands; a photo or painting that cannot be used fails the command (exit 1)."""
    from models.gatys.optimize import GatysConfig
    from stylepipe.errors import StageError
    from tasks.tools.gatys import output_format, parse_sizes, run_gatys

    try:
        sizes = parse_sizes(args.coarse_to_fine) if args.coarse_to_fine else (512 if args.size is None else args.size,)
        if args.size is not None and sizes[-1] != args.size:
            raise StageError(f"--size {args.size} differs from the last --coarse-to-fine size {sizes[-1]}")
        config = GatysConfig(sizes=sizes, steps=args.steps, optimizer=args.optimizer, lr=args.lr,
                             content_weight=args.content_weight, style_weight=args.style_weight,
                             tv_weight=args.tv_weight, palette_weight=args.palette_weight,
                             encoder=args.encoder, style_scale=args.style_scale,
                             init=args.init, seed=args.seed)
        output_format(Path(args.out))
    except StageError as e:
        raise ConfigError(f"gatys: {e}") from None
    try:
        run_gatys(args.content, args.style, args.out, config, device=args.device)
    except StageError as e:
        print(f"stylepipe gatys: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from flows import nightly

    root = _repo_root(args.repo)
    schedule = load_params(root / PARAMS_FILE).schedule
    cron, timezone = args.cron or schedule.cron, args.timezone or schedule.timezone
    nightly.check_cron(cron, timezone)
    name = f"stylepipe-pipeline/{nightly.DEPLOYMENT_NAME}"
    if args.pool:
        deployment_id = nightly.register(root, cron, timezone, pool=args.pool)
        print(f"registered deployment {name} ({deployment_id}) on work pool {args.pool!r} "
              f"cron={cron!r} timezone={timezone}\nrun it with: prefect worker start --pool {args.pool}")
    elif args.register_only:
        deployment_id = nightly.register(root, cron, timezone)
        print(f"registered deployment {name} ({deployment_id}) cron={cron!r} timezone={timezone} "
              "(no work pool: only `stylepipe nightly` serving it runs it; use --pool for a worker)")
    else:
        print(f"serving {name} cron={cron!r} timezone={timezone} (Ctrl-C stops)")
        nightly.serve(root, cron, timezone)
    return 0


def cmd_styles(args: argparse.Namespace) -> int:
    from stylepipe import log
    from stylepipe.config import parse_override, read_raw, set_in, validate
    from stylepipe.errors import StageError
    from tasks.tools import style_grid

    root = _repo_root(args.repo)
    raw = read_raw(root / PARAMS_FILE)
    template, _ = style_grid.template_model(validate(raw))
    for assignment in args.set or []:
        keys, value = parse_override(assignment)
        if keys[0] != "train":
            raise ConfigError(f"--set {assignment}: only train.* settings apply here")
        set_in(raw, ["models", template, *keys], value)  # the settings every painting is trained with
    params = validate(raw, f"{PARAMS_FILE} with --set {' '.join(args.set or [])}")
    out = Path(args.out) if Path(args.out).is_absolute() else root / args.out
    log.setup()
    try:
        summary = style_grid.run(Path(args.folder), params, out, repo_root=root, photos=args.photos,
                                 fresh=args.fresh)
    except StageError as e:
        print(f"stylepipe styles: {e}", file=sys.stderr)
        return 1
    for s in summary["styles"]:
        how = "kept (already trained)" if s["reused"] else "trained"
        print(f"  {s['name']:<28} {how}, {s['seconds']:.0f} s of training  -> {s['model']}")
    print(f"grid: {summary['grid']}")
    for painting, why in summary["failed"].items():
        print(f"stylepipe styles: skipped {painting}: {why}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from models.export import DEFAULT_OPSET, export_onnx
    from stylepipe.errors import StageError

    opset = DEFAULT_OPSET if args.opset is None else args.opset
    try:
        out = export_onnx(args.model_dir, args.out, opset=opset, direction=args.direction or "")
    except StageError as e:
        print(f"stylepipe export-onnx: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {opset}): input 'image' "
          "(N,3,H,W) float RGB in [0,1] -> output 'stylized', same shape")
    return 0


# `stylepipe experiments`: what a researcher compares experiments by. `dvc exp show` alone has a
# column per tracked param, metric and dependency (159 for three experiments of the default models);
# this keeps the params that differ and each model's headline metrics (quality, and whether it
# passed the gate): no dependency hashes (paths), real-vs-real floors, per-check gate flags, sizes,
# counts or creation time. The full table stays one `dvc exp show` away.
# (dvc matches it at the start of each column name: hence the closing $)
EXPERIMENT_DROP = (r"(?:Created|.*/.*|sources|.*\.floor_.*|.*\.gate_(?!passed).*"
                   r"|.*\.(images|samples|params|gflops_512|promoted|content_loss|style_loss|style_loss_content"
                   r"|colour_distance_content|kid_effnetl0|precision|recall|fd_judge|judge_test_accuracy"
                   r"|class_share_min|class_share_max|classes_present|label_accuracy_min_class|ms_\d+|train_seconds))$")


def cmd_experiments(args: argparse.Namespace) -> int:
    from stylepipe.stage import dvc_command

    # this interpreter's dvc, so the command works without the environment on PATH
    cmd = dvc_command("exp", "show", "--no-pager", "--only-changed", "--drop", EXPERIMENT_DROP, *args.dvc_args)
    return subprocess.call(cmd, cwd=_repo_root(args.repo))


def cmd_dag(args: argparse.Namespace) -> int:
    from flows.dag import stage_order

    for name in stage_order(_repo_root(args.repo)):
        print(name)
    return 0


def add_bulk_job_options(parser: argparse.ArgumentParser) -> None:
    """The options stylize, sample and translate share: how outputs are packed and where the job runs."""
    parser.add_argument("--tar-size", type=int, default=0, metavar="N",
                        help="pack the outputs N to a tar file (<out>/tar/*.tar, members named as the files "
                        "would be; WebDataset's layout) instead of one file each (default 0: files)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--prefect", action="store_true",
                        help="run as the Prefect bulk flow: shards mapped over a local task runner")
    parser.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                        help="run as the Prefect bulk flow on this Dask cluster (prefect-dask); the inputs, "
                        "model and --out must be reachable from its workers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylepipe", description="Train style-transfer networks "
                                     "and apply them to image archives (Prefect + DVC).")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the dvc.yaml pipeline as a Prefect flow",
                         description="Run download -> preprocess -> train -> infer -> evaluate "
                         "(stages that are up to date are skipped by DVC).")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override one parameter in params.yaml before running, like "
                     "`dvc exp run -S` (repeatable), e.g. --set models.swirls.train.steps=10")
    run.add_argument("--stage", action="append", metavar="NAME",
                     help="run only this stage (repeatable); a group name like 'train' selects "
                     "every train@<style>")
    run.add_argument("--force", action="store_true", help="re-run stages even when up to date")
    run.add_argument("--repo", default=".", help="project root (default: current directory)")
    run.set_defaults(func=cmd_run)

    stylize = sub.add_parser(
        "stylize", help="stylize a folder, archive or URL of images with trained models",
        description="Apply trained models (data/models/<style> folders) to every image in SOURCE: a "
        "folder tree, a zip, a tar(.gz/.bz2/.xz), a single image, or any of these as an fsspec URL "
        "(s3://..., with its backend installed). Archives are read in place. The relative tree is "
        "kept under --out (with several models, one subfolder per model). Every outcome is recorded "
        "in a ledger; a second run resumes: it skips what is done. Exit code 1 when more than "
        "--max-failed-fraction of the inputs failed.")
    stylize.add_argument("source", help="folder, archive, image file, or fsspec URL")
    stylize.add_argument("--model", action="append",
                         help="model folder with model.safetensors + model.json (repeatable: one "
                         "pass applies every model)")
    stylize.add_argument("--out", required=True, help="output folder")
    stylize.add_argument("--strength", type=float, nargs="+", default=[1.0], metavar="S",
                         help="blend with the photo, 0..1: one value, or one per --model (default 1)")
    stylize.add_argument("--preserve-colors", nargs="*", choices=["yes", "no"], metavar="yes|no",
                         help="keep the photo's colours (stylize the luminance only); alone: every "
                         "model, or one yes/no per --model")
    stylize.add_argument("--max-size", type=int, default=None,
                         help="longest output side; larger inputs are scaled down (default: keep size)")
    stylize.add_argument("--texture-scale", type=float, default=1.0, metavar="X",
                         help="texture X times larger: the network sees the image X times smaller and its "
                         "result is resized back to the output size (0.25..16; default 1)")
    stylize.add_argument("--work-size", type=int, default=None, metavar="PX",
                         help="stylize every image at this long side, then resize it back: a 6000-px output "
                         "looks like the PX-px one, enlarged (--texture-scale multiplies on top)")
    stylize.add_argument("--format", choices=["jpg", "png", "webp"], default="jpg")
    stylize.add_argument("--quality", type=int, default=92, help="JPEG/WebP quality (default 92)")
    stylize.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    stylize.add_argument("--batch-size", type=int, default=None,
                         help="images of one size per forward pass (default: 1 on CPU, 16 on CUDA)")
    stylize.add_argument("--workers", type=int, default=2,
                         help="decode/encode worker processes (0: in this process; default 2)")
    stylize.add_argument("--parallel-batches", type=int, default=None,
                         help="forward passes at once, one batch each (default: one per CPU core; 2 on CUDA)")
    stylize.add_argument("--threads", type=int, default=None,
                         help="torch threads per forward pass (default: cores / parallel batches)")
    stylize.add_argument("--layout", choices=["auto", "fixed"], default="auto",
                         help="auto (default): on the CPU, unless --batch-size, --parallel-batches or --threads "
                              "is given, run the layout (passes x threads x batch) remembered for this machine, "
                              "network and image size, or, in a job of enough images (108 on 2 cores), time a few on "
                              "the first untiled batch and keep the fastest; fixed: one pass per core (at most 8), "
                              "batches of one")
    stylize.add_argument("--backend", choices=BACKENDS,
                         default="auto",
                         help="the forward pass's runtime on a CPU: torch, onnxruntime or openvino (the network "
                              "exported to ONNX), or auto (default): the fastest of the three on the first batch, "
                              "remembered per machine and network (a retrained model keeps it); torch-bf16 (bf16 autocast + channels_last) and "
                              "openvino-bf16 (OpenVINO at bf16): for CPUs with AVX512-BF16/AMX, "
                              "lossy, never chosen by auto")
    stylize.add_argument("--codec", choices=["auto", "pillow", "device"], default="auto",
                         help="where JPEGs are decoded and encoded: device (nvJPEG on CUDA: only compressed "
                              "bytes cross the worker processes), pillow (the worker processes), or auto "
                              "(default): device on CUDA, else pillow. Inputs the device cannot take as they are "
                              "(resized, rotated, progressive, CMYK, tiled) are decoded by the workers")
    stylize.add_argument("--compile", action="store_true",
                         help="torch.compile the networks: on an H200 about 2.1x the images/s at 1024 px once "
                              "running, after 11-25 s of compiling per image size (for long jobs of one size: it "
                              "gains from about 5,000-11,000 images on)")
    stylize.add_argument("--tile-above", type=int, default=2048,
                         help="stylize images whose long side is above this in tiles (default 2048)")
    stylize.add_argument("--tile-size", type=int, default=1280, help="tile side, a multiple of 4 (default 1280)")
    stylize.add_argument("--tile-overlap", type=int, default=64, help="overlap of neighbouring tiles (default 64)")
    stylize.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                         help="refuse larger images (decompression bombs; default 64M)")
    stylize.add_argument("--max-input-bytes", type=int, default=128 * 2**20,
                         help="refuse larger files and archive members, counted while they are read and "
                         "decompressed (default 128 MiB)")
    stylize.add_argument("--max-failed-fraction", type=float, default=0.01,
                         help="exit 1 when more than this fraction of inputs failed (default 0.01)")
    stylize.add_argument("--ledger", help="ledger file (default: OUT/.stylepipe/ledger.sqlite)")
    stylize.add_argument("--no-resume", action="store_true",
                         help="redo everything, even what the ledger has done")
    stylize.add_argument("--dry-run", action="store_true", help="list and count only; write nothing")
    stylize.add_argument("--limit", type=int, default=None, help="stylize at most this many inputs")
    stylize.add_argument("--shard-size", type=int, default=1000, help="images per Prefect task (default 1000)")
    stylize.add_argument("--gatys-style", metavar="PAINTING",
                         help="instead of --model: optimise every image after this painting (Gatys; "
                         "seconds to minutes per image, for small jobs; see `stylepipe gatys`)")
    stylize.add_argument("--gatys-steps", type=int, default=150,
                         help="Gatys: L-BFGS loss evaluations per size (default 150)")
    stylize.add_argument("--gatys-size", default="256,512", metavar="S[,S...]",
                         help="Gatys: long side of each coarse-to-fine level; the last caps the output "
                         "size (default 256,512)")
    stylize.add_argument("--gatys-max-inputs", type=int, default=200, metavar="N",
                         help="Gatys: refuse a job of more images than this unless --limit is given "
                         "(default 200; 0: no cap)")
    stylize.add_argument("--adain-style", metavar="PAINTING",
                         help="with one adain --model: stylize after this painting (any painting, no "
                         "training; its features are computed once per job)")
    stylize.add_argument("--style", action="append", metavar="PAINTING:WEIGHT",
                         help="AdaIN: another painting mixed in with this weight (repeatable; "
                         "--adain-style gets 1 minus their sum); with --mask: the black region's painting")
    stylize.add_argument("--alpha", type=float, default=None,
                         help="AdaIN: content-style trade-off at feature level, 0 (the photo) to 1 (default)")
    stylize.add_argument("--mask", metavar="IMAGE",
                         help="AdaIN: white region gets --adain-style, black the --style painting (or "
                         "stays the photo); resized to each image")
    stylize.add_argument("--style-manifest", metavar="CSV",
                         help="AdaIN: a painting per input: a CSV with the header 'input,painting', then "
                         "a row per input (its name as `stylepipe ledger` lists it; the painting's path, "
                         "relative to the CSV's folder or absolute); inputs it does not name get "
                         "--adain-style, or fail with no-painting")
    stylize.add_argument("--adain-style-size", type=int, default=512, metavar="PX",  # models/adain/params.py STYLE_SIZE
                         help="AdaIN: long side the paintings are encoded at (texture scale; default 512)")
    add_bulk_job_options(stylize)
    stylize.set_defaults(func=cmd_stylize)

    sample = sub.add_parser(
        "sample", help="draw images from a trained generator (dcgan, cgan, vae) into a folder",
        description="Draw --count samples from a generator model folder. Sample i has seed --seed + i; "
        "a conditional model deals the --labels round-robin (default: every class) and writes "
        "OUT/<label>/<seed>.png, an unconditional one OUT/<seed>.png. Each image is a pure function of "
        "(model, seed, label), recorded in a ledger: a re-run resumes, a larger --count adds only the "
        "new seeds.")
    sample.add_argument("model", help="model folder (model.safetensors + model.json)")
    sample.add_argument("--count", type=int, required=True, help="how many samples")
    sample.add_argument("--out", required=True, help="output folder")
    sample.add_argument("--labels", help="conditional models: comma-separated classes, e.g. 0,3,7")
    sample.add_argument("--seed", type=int, default=0, help="the first sample's seed (default 0)")
    sample.add_argument("--truncation", type=float, default=None, metavar="T",
                        help="GANs: redraw noise entries with |z| > T (the truncation trick; default: off)")
    sample.add_argument("--batch-size", type=int, default=None, help="samples per forward pass (default 256)")
    sample.add_argument("--workers", type=int, default=2, help="PNG encoder processes (0: in this process)")
    sample.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    sample.add_argument("--limit", type=int, default=None, help="draw at most this many in this run")
    add_bulk_job_options(sample)
    sample.set_defaults(func=cmd_sample)

    translate = sub.add_parser(
        "translate", help="translate a folder, archive or URL of images with a pix2pix or cyclegan model",
        description="Apply a translation model (pix2pix: A -> B; cyclegan: either way) to every image in "
        "SOURCE (folder, zip/tar, image, fsspec URL), through the bulk engine like `stylize`: the tree is "
        "kept under --out, every outcome is in a ledger, a second run skips what is done, large images "
        "are translated in tiles.")
    translate.add_argument("source", help="folder, archive, image file, or fsspec URL")
    translate.add_argument("--model", required=True, help="model folder (model.safetensors + model.json)")
    translate.add_argument("--out", required=True, help="output folder")
    translate.add_argument("--direction", choices=["a2b", "b2a"], default="a2b",
                           help="a2b (default) or b2a (cyclegan only)")
    translate.add_argument("--max-size", type=int, default=None, help="longest output side (default: keep size)")
    translate.add_argument("--format", choices=["jpg", "png", "webp"], default="png")
    translate.add_argument("--quality", type=int, default=92, help="JPEG/WebP quality (default 92)")
    translate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    translate.add_argument("--backend", choices=BACKENDS,
                           default="auto",
                           help="the forward pass's runtime on a CPU, as for stylize (default auto: the fastest of "
                                "torch, onnxruntime and openvino on the first batch; the export is one direction's "
                                "generator)")
    translate.add_argument("--codec", choices=["auto", "pillow", "device"], default="auto",
                           help="where JPEGs are decoded and encoded, as for stylize (default auto: on the GPU "
                                "with CUDA, else in the worker processes)")
    translate.add_argument("--compile", action="store_true",
                           help="torch.compile the networks, as for stylize (for long jobs of one image size)")
    translate.add_argument("--batch-size", type=int, default=None, help="images of one size per forward pass")
    translate.add_argument("--layout", choices=["auto", "fixed"], default="auto",
                           help="passes x threads x batch: remembered or measured (auto, unless --batch-size is "
                                "given) or fixed, as for stylize")
    translate.add_argument("--workers", type=int, default=2, help="decode/encode processes (0: in this process)")
    translate.add_argument("--tile-above", type=int, default=2048, help="translate larger images in tiles")
    # (not stylize's 1280 / 64: the 64-px overlap was measured on style networks, whose receptive
    # field is far smaller than a U-Net's)
    translate.add_argument("--tile-size", type=int, default=1024, help="tile side, a multiple of 4 (default 1024)")
    translate.add_argument("--tile-overlap", type=int, default=128, help="overlap of neighbouring tiles (default 128)")
    translate.add_argument("--max-failed-fraction", type=float, default=0.01,
                           help="exit 1 when more than this fraction of inputs failed (default 0.01)")
    translate.add_argument("--no-resume", action="store_true", help="redo everything, even what the ledger has done")
    translate.add_argument("--limit", type=int, default=None, help="translate at most this many inputs")
    add_bulk_job_options(translate)
    translate.set_defaults(func=cmd_translate)

    gatys = sub.add_parser(
        "gatys", help="stylize one image by optimisation after any painting (no training)",
        description="Gatys et al.'s style transfer: optimise the pixels of CONTENT until its features "
        "match CONTENT's and its feature statistics match STYLE's (models/gatys/optimize.py). Seconds to minutes "
        "per image on a CPU; --coarse-to-fine optimises small first and refines at each larger size.")
    gatys.add_argument("content", help="the photo")
    gatys.add_argument("style", help="the painting")
    gatys.add_argument("--out", required=True, help="output image (.png, .jpg, .webp); written atomically")
    gatys.add_argument("--size", type=int, default=None, help="long side of the output (default 512)")
    gatys.add_argument("--coarse-to-fine", metavar="S,S,...",
                       help="long sides of the levels, increasing, e.g. 256,512; the last is the output's")
    gatys.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    gatys.add_argument("--steps", type=int, default=150,
                       help="per level: L-BFGS loss evaluations or Adam steps (default 150; Adam needs more)")
    gatys.add_argument("--lr", type=float, default=None, help="step size (default: 1 for L-BFGS, 0.02 for Adam)")
    gatys.add_argument("--content-weight", type=float, default=1.0, help="default 1")
    gatys.add_argument("--style-weight", type=float, default=100.0, help="default 100")
    gatys.add_argument("--tv-weight", type=float, default=20.0, help="total variation: smoothness (default 20)")
    gatys.add_argument("--palette-weight", type=float, default=1.0,
                       help="the painting's colours, as part of the style loss; 0: none (default 1)")
    gatys.add_argument("--style-scale", type=float, default=1.0,
                       help="painting's long side relative to the output's: larger, larger strokes (default 1)")
    gatys.add_argument("--encoder", choices=["efficientnet_lite0", "vgg16", "vgg19"], default="efficientnet_lite0",
                       help="loss network (VGG needs its weights in data/weights)")
    gatys.add_argument("--init", choices=["content", "noise"], default="content")
    gatys.add_argument("--seed", type=int, default=0, help="noise for --init noise (default 0)")
    gatys.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    gatys.set_defaults(func=cmd_gatys)

    nightly = sub.add_parser("nightly", help="serve (or register) the nightly Prefect deployment",
                             description="Create the scheduled deployment of the pipeline flow and "
                             "serve its runs from this process (one box), or register it on a process "
                             "work pool for `prefect worker start --pool NAME` (--pool). Schedule from "
                             "params.yaml `schedule`.")
    nightly.add_argument("--cron", help="cron schedule (default: params.yaml schedule.cron)")
    nightly.add_argument("--timezone", help="time zone of the schedule (default: params.yaml)")
    nightly.add_argument("--pool", metavar="NAME",
                         help="register the deployment on process work pool NAME (created if missing) "
                         "and exit: `prefect worker start --pool NAME` runs it")
    nightly.add_argument("--register-only", action="store_true",
                         help="register the deployment on the Prefect API without a work pool and exit "
                         "(only a serving `stylepipe nightly` runs it; a worker needs --pool)")
    nightly.add_argument("--repo", default=".", help="project root (default: current directory)")
    nightly.set_defaults(func=cmd_nightly)

    styles = sub.add_parser(
        "styles", help="train a model for every painting in a folder and draw a grid of results",
        description="Try out new styles outside the pipeline: train one model per image in FOLDER "
        "(params.yaml `train` settings, the pipeline's preprocessed photos), then render grid.png: "
        "held-out photos down, styles across, with each style's training time. Finished models are "
        "kept; an interrupted run resumes.")
    styles.add_argument("folder", help="folder of style images (paintings)")
    styles.add_argument("--out", default="data/style-grid", help="output folder (default data/style-grid)")
    styles.add_argument("--set", action="append", metavar="train.KEY=VALUE",
                        help="override a train setting for this command only (repeatable), "
                        "e.g. --set train.steps=200")
    styles.add_argument("--photos", type=int, default=4, help="held-out photos in the grid (default 4)")
    styles.add_argument("--fresh", action="store_true",
                        help="discard checkpoints of interrupted runs instead of resuming from them")
    styles.add_argument("--repo", default=".", help="project root (default: current directory)")
    styles.set_defaults(func=cmd_styles)

    export = sub.add_parser(
        "export-onnx", help="export a trained model to ONNX (for onnxruntime, OpenVINO or another ONNX runtime)",
        description="Write the network in MODEL_DIR (a johnson model, or a pix2pix / cyclegan model in "
        "one --direction; model.safetensors + model.json, pickles are "
        "never loaded) as one ONNX file: input 'image' (N,3,H,W) float RGB in [0,1], output "
        "'stylized' (same shape), batch/height/width dynamic; the sidecar's style, network, "
        "code_version and the weights' sha256 are stored as ONNX metadata.")
    export.add_argument("model_dir", metavar="MODEL_DIR",
                        help="trained model folder, e.g. data/models/swirls")
    export.add_argument("--out", required=True, metavar="FILE.onnx",
                        help="the file to write (replaced atomically)")
    export.add_argument("--opset", type=int, default=None, metavar="N",
                        help="ONNX opset, 11 to 20 (default 17)")
    export.add_argument("--direction", choices=["a2b", "b2a"], default=None,
                        help="a translation model (pix2pix, cyclegan): the direction to export (default a2b)")
    export.set_defaults(func=cmd_export_onnx)

    ledger = sub.add_parser(
        "ledger", help="what a stylize/sample job did, and why each failure failed",
        description="Read the ledger of a bulk job (OUT/.stylepipe/ledger.sqlite, or a ledger file such as "
        ".cache/infer/<model>/ledger.sqlite): counts by status and reason code, then one line per "
        "(input, model). Reason codes are listed in tasks/data/reasons.py.")
    ledger.add_argument("out", metavar="OUT", help="the job's --out folder, or a ledger file")
    ledger.add_argument("--failed", action="store_true", help="only the failed rows")
    ledger.add_argument("--csv", action="store_true", help="CSV on stdout: relpath, model, status, code, reason, "
                        "output, input_sha256, finished_at, run_id")
    ledger.set_defaults(func=cmd_ledger)

    experiments = sub.add_parser("experiments", help="dvc exp show, narrowed to what differs between experiments",
                                 description="`dvc exp show --only-changed` without dependency hashes, floors, "
                                             "gate flags and times. Extra arguments go to dvc exp show "
                                             "(e.g. -A, --csv, --sort-by).")
    experiments.add_argument("--repo", default=".", help="project root (default: current directory)")
    experiments.set_defaults(func=cmd_experiments)

    dag = sub.add_parser("dag", help="print the stage order derived from dvc.yaml")
    dag.add_argument("--repo", default=".", help="project root (default: current directory)")
    dag.set_defaults(func=cmd_dag)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The embedded server's start (its database, on a new PREFECT_HOME) overran Prefect's 20 s on
    # 2 cores busy with training, and the run failed before its first stage; a set value is kept.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "experiments":
        args.dvc_args = extra  # dvc exp show's own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"stylepipe: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # what is done is recorded (bulk jobs resume); a traceback would only hide that
        print(f"stylepipe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
