"""Evaluate stage: which style models exist, how good and how fast they are, and whether each one
may be published.

For every style in params.styles it measures the stylize stage's outputs on the validation photos
(tasks/evaluation/metrics.py says what each number means), times the network, runs the quality gate and
promotes a passing model (tasks/evaluation/gate.py), then writes:
  metrics/metrics.json            {"<style>": {flat numbers}}: DVC metrics (dvc metrics show/diff)
  data/eval/report/index.html     the report (tasks/evaluation/report.py), with beside it images/,
                                  per_image.csv and summary.json (everything, for the Prefect flow)
  data/published/<style>/         the promoted model with metrics.json, lineage.json, history.jsonl
A model that fails the gate is not promoted, but the stage still succeeds: the verdict and its
reasons are in metrics.json (gate_passed, promoted) and summary.json, for the flow to act on.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stylepipe import timings
from stylepipe.config import EvaluateParams, Params, load_params
from stylepipe.devices import pick_device
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file
from stylepipe.stage import run_main
from models import registry
from models.sidecar import WEIGHTS_FILE
from tasks.evaluation import distributions, gate, generation, inception, metrics as em, report
from tasks.data.images import IMAGE_SUFFIXES, is_image_file

log = logging.getLogger("stylepipe.evaluate")
IMAGE_METRICS = ("content_loss", "style_loss", "style_loss_content", "ssim", "colour_distance",
                 "colour_distance_content", "lpips")


@dataclasses.dataclass(frozen=True)
class Paths:
    processed: Path = Path("data/processed")   # <dataset>/val: the held-out photos
    styles: Path = Path("data/raw/models")      # <model>/files/...: each style model's painting
    models: Path = Path("data/models")
    stylized: Path = Path("data/infer")
    train_logs: Path = Path("metrics/train")
    weights: Path = Path("data/weights")
    metrics: Path = Path("metrics/metrics.json")
    report: Path = Path("data/eval/report")
    published: Path = Path("data/published")

    @classmethod
    def under(cls, root: Path) -> Paths:
        return cls(**{f.name: Path(root) / f.default for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class Tools:
    """What every measurement shares: the fixed evaluation encoder and the device."""

    encoder: torch.nn.Module
    style_layers: list[str]
    content_layers: list[str]
    device: torch.device
    lpips: torch.nn.Module | None


@dataclasses.dataclass
class Content:
    name: str
    path: Path
    width: int
    height: int
    arr: np.ndarray  # at the evaluation size
    feats: dict  # content layers only
    grams: dict
    lab: np.ndarray


# ---------------------------------------------------------------------------------------------
# Inputs


def find_val_images(val_dir: Path) -> list[Path]:
    images = sorted(val_dir.glob("*.png"))
    if not images:
        raise StageError(f"{val_dir}: no validation images (*.png); run the preprocess stage")
    return images


def find_style_image(styles_dir: Path, style: str) -> Path:
    files = styles_dir / style / "files"
    found = sorted(p for p in files.rglob("*") if p.is_file() and is_image_file(p))
    if len(found) != 1:
        what = "no image" if not found else f"{len(found)} images ({', '.join(map(str, found[:3]))})"
        raise StageError(f"{files}: expected exactly one style image, found {what}; run the download stage")
    return found[0]


def find_stylized(stylized_dir: Path, names: list[str]) -> dict[str, Path]:
    """The infer stage's output for each validation image: <name>.<any image suffix>."""
    by_stem = {p.stem: p for p in sorted(stylized_dir.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [n for n in names if n not in by_stem]
    if missing:
        raise StageError(
            f"{stylized_dir}: no stylized output for {len(missing)} of {len(names)} validation images "
            f"(e.g. {', '.join(missing[:3])}); run the infer stage"
        )
    return {n: by_stem[n] for n in names}


def build_tools(params: EvaluateParams, paths: Paths) -> tuple[Tools, dict]:
    device = pick_device(params.device)
    encoder, style_layers, content_layers = em.build_eval_encoder(paths.weights, device)
    lpips_ok, lpips_note = em.lpips_status()
    if not lpips_ok:
        log.info("learned perceptual distance (LPIPS) unavailable: %s", lpips_note)
    tools = Tools(encoder, style_layers, content_layers, device, em.build_lpips(device) if lpips_ok else None)
    return tools, {"available": lpips_ok, "note": lpips_note}


def load_content(path: Path, size: int, tools: Tools) -> Content:
    """One validation photo at the evaluation size, with what every comparison needs. Loaded per
    style and per use rather than kept for the whole run: the validation split may be large."""
    img = em.open_rgb(path)
    arr = em.to_array(img, em.eval_dims(*img.size, size))
    feats = em.features(tools.encoder, arr, tools.device)
    return Content(path.stem, path, img.width, img.height, arr,
                   {n: feats[n] for n in tools.content_layers}, em.grams(feats, tools.style_layers),
                   em.lab_pixels(arr))


# ---------------------------------------------------------------------------------------------
# Measurements


def image_metrics(result: np.ndarray, content: Content, style_grams: dict, style_lab: np.ndarray,
                  tools: Tools) -> dict[str, float]:
    """The metrics of one result (at the evaluation size) against its photo and the style image."""
    feats = em.features(tools.encoder, result, tools.device)
    row = {
        "content_loss": em.content_loss(feats, content.feats, tools.content_layers),
        "style_loss": em.style_loss(em.grams(feats, tools.style_layers), style_grams),
        "style_loss_content": em.style_loss(content.grams, style_grams),
        "ssim": em.ssim(content.arr, result),
        "colour_distance": em.colour_distance(em.lab_pixels(result), style_lab),
        "colour_distance_content": em.colour_distance(content.lab, style_lab),
    }
    if tools.lpips is not None:
        row["lpips"] = em.lpips_distance(tools.lpips, content.arr, result, tools.device)
    return row


def head_to_head(nets: dict[str, torch.nn.Module], val: list[Path], size: int, style_grams: dict,
                 tools: Tools) -> dict[str, dict[str, float]]:
    """Run each network in-process on the same evaluation-size photos: {net: {style_loss, ssim,
    content_loss}} means. Used to compare a candidate with the published model on equal terms,
    whatever data or settings the published model's stored metrics came from."""
    rows: dict[str, list[dict]] = {key: [] for key in nets}
    for path in val:
        c = load_content(path, size, tools)
        for key, net in nets.items():
            y = em.run_network(net, c.arr, tools.device)
            feats = em.features(tools.encoder, y, tools.device)
            rows[key].append({
                "style_loss": em.style_loss(em.grams(feats, tools.style_layers), style_grams),
                "content_loss": em.content_loss(feats, c.feats, tools.content_layers),
                "ssim": em.ssim(c.arr, y),
            })
    return {key: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for key, rs in rows.items()}


def model_metrics(net: torch.nn.Module, sidecar: dict, params: EvaluateParams, device: torch.device) -> dict:
    from models.johnson.network import count_params, network_flops_per_pixel

    sizes = sorted(set(params.timing_sizes) | {params.gate.latency_size})
    timings = em.time_inference(net, sizes, params.timing_repeats, device)
    out = {f"ms_{s}": round(ms, 2) for s, ms in timings.items()}
    out["params"] = count_params(net)
    # FLOPs per pixel of a fully convolutional network do not depend on the size: count at 128 px
    out["gflops_512"] = round(network_flops_per_pixel(net, 128) * 512 * 512 / 1e9, 3)
    out["train_steps"] = sidecar.get("steps")
    return {k: v for k, v in out.items() if isinstance(v, (int, float))}


def headline(metrics: dict) -> dict:
    """What metrics/metrics.json (the `dvc exp show` / `dvc metrics diff` columns) holds of a model's
    metrics: its quality and the gate's verdict. Each check's flag and the head-to-head with the
    published model are in the report's summary.json (`gate`, `comparison`)."""
    return {k: v for k, v in metrics.items()
            if not (k.startswith("gate_") and k != "gate_passed") and not k.startswith("vs_published_")}


def split_timings(metrics: dict) -> dict:
    """Take the machine's measurements (ms_<size>) out of `metrics`: they go to metrics/timings.json,
    not into DVC outputs, whose bytes must not depend on the machine's speed."""
    return {k: metrics.pop(k) for k in [k for k in metrics if k.startswith("ms_")]}


def without_measured_latency(checks: list[dict], params: EvaluateParams) -> list[dict]:
    """The latency check as stored in outputs: its decision and threshold, not the measured value."""
    g = params.gate
    return [{**ch, "value": None, "message": f"one {g.latency_size} px image "
             f"{'within' if ch['passed'] else 'over'} {g.max_latency_ms:.0f} ms (measured: metrics/timings.json)"}
            if ch["name"] == "latency" else ch for ch in checks]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------------
# One style


def evaluate_style(style: str, val: list[Path], params: EvaluateParams, paths: Paths,
                   tools: Tools) -> dict:
    from models.weights import load_model

    log.info("style %s: measuring", style)
    style_path = find_style_image(paths.styles, style)
    style_img = em.open_rgb(style_path)
    style_arr = em.to_array(style_img, em.eval_dims(*style_img.size, params.image_size))
    style_grams = em.grams(em.features(tools.encoder, style_arr, tools.device), tools.style_layers)
    style_lab = em.lab_pixels(style_arr)

    names = [p.stem for p in val]
    stylized = find_stylized(paths.stylized / style, names)
    rows = []
    for path in val:
        c = load_content(path, params.image_size, tools)
        result = em.to_array(em.open_rgb(stylized[c.name]), (c.arr.shape[1], c.arr.shape[0]))
        rows.append({"style": style, "image": c.name, "width": c.width, "height": c.height,
                     **image_metrics(result, c, style_grams, style_lab, tools),
                     "content_path": str(c.path), "result_path": str(stylized[c.name])})

    model_dir = paths.models / style
    net, sidecar = load_model(model_dir, tools.device)
    metrics = {"images": len(rows)}
    metrics.update({k: float(np.mean([r[k] for r in rows])) for k in IMAGE_METRICS if k in rows[0]})
    metrics["style_loss_drop"] = 1.0 - metrics["style_loss"] / max(metrics["style_loss_content"], 1e-12)
    metrics.update(model_metrics(net, sidecar, params, tools.device))

    published_dir = paths.published / style
    candidate_sha = sha256_file(model_dir / WEIGHTS_FILE)
    published_sha = gate.published_sha(published_dir)
    comparison = None
    if published_sha is not None and published_sha != candidate_sha:
        published_net, _ = load_model(published_dir, tools.device)
        comparison = head_to_head({"candidate": net, "published": published_net}, val, params.image_size,
                                  style_grams, tools)
        comparison["published_sha256"] = published_sha
        lineage_file = published_dir / "lineage.json"
        if lineage_file.is_file():
            comparison["published_from"] = json.loads(lineage_file.read_text()).get("model", {}).get("code_version")
        metrics["vs_published_style_loss_ratio"] = (
            comparison["candidate"]["style_loss"] / max(comparison["published"]["style_loss"], 1e-12))
        metrics["vs_published_ssim_delta"] = comparison["candidate"]["ssim"] - comparison["published"]["ssim"]

    checks = gate.gate_checks(metrics, params.gate, comparison)
    measured = split_timings(metrics)
    log.info("style %s: latency %s", style, ", ".join(f"{k[3:]} px {v:.1f} ms" for k, v in measured.items()))
    timings.record(style, {**measured, "eval_device": describe_device(tools.device)},
                   path=paths.metrics.parent / timings.TIMINGS.name)
    checks = without_measured_latency(checks, params)
    passed = all(ch["passed"] for ch in checks)
    decision, reason = gate.decide(checks, candidate_sha, published_sha, params.promote)

    for ch in checks:
        metrics[f"gate_{ch['name']}"] = int(ch["passed"])
    metrics["gate_passed"] = int(passed)
    metrics["promoted"] = int(decision in ("promoted", "already_published"))
    metrics = {k: _round(v) for k, v in metrics.items()}

    if decision == "promoted":
        lineage = {
            "style": style,
            "model_sha256": candidate_sha,
            "replaces_sha256": published_sha,
            "model": sidecar,
            "style_image": {"path": str(style_path), "sha256": sha256_file(style_path)},
            "evaluation": evaluation_settings(params, tools, names),
            "gate": checks,
            "comparison": comparison,
        }
        gate.promote(model_dir, published_dir, metrics, lineage)
    (log.info if passed else log.warning)("style %s: %s: %s", style, decision, reason)

    return {
        "metrics": metrics,
        "images": rows,
        "gate": {"passed": passed, "checks": checks},
        "decision": decision,
        "reason": reason,
        "comparison": comparison,
        "model": {"dir": str(model_dir), "sha256": candidate_sha, "sidecar": sidecar},
        "published_dir": str(published_dir),
        "published_sha256": gate.published_sha(published_dir),  # after this run: None = nothing published
        "style_image": str(style_path),
        "train_log": str(paths.train_logs / f"{style}.tsv"),
    }


def evaluation_settings(params: EvaluateParams, tools: Tools, names: list[str]) -> dict:
    """What a promoted model's metrics were measured with (its lineage.json)."""
    return {
        "encoder": em.EVAL_ENCODER, "style_layers": tools.style_layers,
        "content_layers": tools.content_layers, "image_size": params.image_size,
        "val_images": names, "val_set_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
    }


def _round(v):
    return round(v, 6) if isinstance(v, float) else v


# ---------------------------------------------------------------------------------------------
# The stage


# Families the style yardstick measures (a Gatys "model" is a painting: nothing to gate).
STYLE_FAMILIES = ("johnson",)
JUDGE_CACHE = Path(".cache/judges")


def evaluate_generator(name: str, family: str, ev: EvaluateParams, paths: Paths, device: torch.device,
                       reals: dict, extractor, truncation: float | None = None) -> dict:
    """Metrics, grids, gate and promotion of one generator (tasks/evaluation/generation.py), sampled
    as the infer stage samples it (its infer.truncation)."""
    from models.weights import load_model
    from models.gan import set_truncation

    model_dir = paths.models / name
    net, sidecar = load_model(model_dir, device)
    set_truncation(net, truncation, family)
    dataset = sidecar["dataset"]
    if dataset not in reals:
        log.info("dataset %s: judge and real-vs-real floors", dataset)
        fid_weights = inception.find_weights(paths.weights)
        if fid_weights is not None:
            log.info("dataset %s: FID Inception weights %s: fid_inception will be reported", dataset, fid_weights.name)
        reals[dataset] = generation.real_data(paths.processed / dataset, ev.generation_samples, extractor,
                                              device, JUDGE_CACHE,
                                              inception.load(fid_weights) if fid_weights is not None else None)
    real = reals[dataset]
    log.info("model %s (%s): drawing %d samples", name, family, ev.generation_samples)
    metrics = generation.measure(net, sidecar, real, extractor, device, ev.generation_samples)
    checks = generation.gate_checks(metrics, family, ev.generation_gate)
    candidate_sha = sha256_file(model_dir / WEIGHTS_FILE)
    published_dir = paths.published / name
    published_sha = gate.published_sha(published_dir)
    decision, reason = gate.decide(checks, candidate_sha, published_sha, ev.promote)
    passed = all(c["passed"] for c in checks)
    metrics.update({f"gate_{c['name']}": int(c["passed"]) for c in checks})
    metrics["gate_passed"] = int(passed)
    metrics["promoted"] = int(decision in ("promoted", "already_published"))
    metrics = {k: _round(v) for k, v in metrics.items()}
    if decision == "promoted":
        gate.promote(model_dir, published_dir, metrics, {
            "model": sidecar, "model_sha256": candidate_sha,
            "replaces_sha256": published_sha, "gate": checks,
            "evaluation": {"samples": ev.generation_samples, "judge_test_accuracy": real.judge_accuracy}})
    (log.info if passed else log.warning)("model %s: %s: %s", name, decision, reason)
    return {"metrics": metrics, "family": family, "gate": {"passed": passed, "checks": checks},
            "decision": decision, "reason": reason, "model": {"dir": str(model_dir), "sha256": candidate_sha,
                                                              "sidecar": sidecar},
            "published_dir": str(published_dir), "published_sha256": gate.published_sha(published_dir),
            "train_log": str(paths.train_logs / f"{name}.tsv"),
            "previews": [str(p) for p in sorted((model_dir / "previews").glob("*.png"))],
            "net": net, "real": real}


def evaluate_translator(name: str, m, ev: EvaluateParams, paths: Paths, device: torch.device, extractor) -> dict:
    """Paired scores against the identity baseline, distances to the target domain, cycle error and
    an input | output | target grid of one translation model (tasks/evaluation/translation.py).
    Translation models have no gate yet: they are measured, never promoted."""
    from models.weights import load_model
    from tasks.evaluation import translation as tr

    net, sidecar = load_model(paths.models / name, device)
    direction = m.infer.direction
    source, target = ("A", "B") if direction == "a2b" else ("B", "A")
    val = paths.processed / m.dataset / "val"
    inputs = {p.stem: p for p in find_val_images(val / source)}
    outputs = find_stylized(paths.stylized / name, sorted(inputs))
    targets = {p.stem: p for p in sorted((val / target).glob("*.png"))}
    metrics: dict = {"images": len(inputs), **tr.paired_metrics(outputs, inputs, targets)}
    metrics.update(tr.distribution_metrics(
        list(outputs.values()), list(inputs.values()), list(targets.values()),
        sorted((paths.processed / m.dataset / "train" / target).glob("*.png")), extractor, device))
    cycle = tr.cycle_error(net.eval(), list(inputs.values())[:200], direction, device)
    if cycle is not None:
        metrics["cycle_l1"] = cycle
    shown = sorted(inputs)[: max(ev.report_images, 8)]
    grid = tr.write_grid([(inputs[n], outputs[n], targets.get(n)) for n in shown],
                         paths.report / "images" / name / "grid.png")
    log.info("model %s (%s, %s): %s", name, m.family, direction,
             ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return {"metrics": {k: _round(v) for k, v in metrics.items()}, "family": m.family, "direction": direction,
            "grid": str(grid.relative_to(paths.report)), "train_log": str(paths.train_logs / f"{name}.tsv"),
            "model": {"dir": str(paths.models / name), "sidecar": sidecar}}


def evaluate_adain(name: str, entry, params: EvaluateParams, paths: Paths, tools: Tools,
                   per_style: dict[str, str]) -> dict:
    """An adain model on held-out paintings x held-out photos: the yardstick of the style models
    (style loss drop, SSIM, colour distance), per painting (the paintings dataset's val split, never
    trained on) and their mean. Each photo is stylized in-process at the evaluation size; each
    painting is encoded with its long side at STYLE_SIZE, as in bulk jobs.

    per_style: painting file stem (its sha256[:16], preprocess's name) -> a johnson model trained on
    that painting. Such a model is run on the same photos and scored against the same painting, so
    the report shows the two side by side on equal terms."""
    from models.adain.network import stylize
    from models.adain.params import STYLE_SIZE
    from models.weights import load_model
    from tasks.data.datasets import load_style_image

    photos = find_val_images(paths.processed / entry.dataset / "val")
    paintings = sorted((paths.processed / entry.train.styles / "val").glob("*.png"))
    if not paintings:
        raise StageError(f"{paths.processed / entry.train.styles / 'val'}: no held-out paintings; "
                         "raise preprocess.val_fraction or add paintings")
    net, sidecar = load_model(paths.models / name, tools.device)
    log.info("adain %s: %d held-out paintings x %d held-out photos", name, len(paintings), len(photos))
    per_painting, rows, shown = {}, [], {}
    for painting in paintings:
        img = em.open_rgb(painting)
        arr = em.to_array(img, em.eval_dims(*img.size, params.image_size))
        grams = em.grams(em.features(tools.encoder, arr, tools.device), tools.style_layers)
        lab = em.lab_pixels(arr)
        with torch.inference_mode():
            stats = net.style_of(load_style_image(painting, STYLE_SIZE).to(tools.device))
        twin = per_style.get(painting.stem)
        twin_net = load_model(paths.models / twin, tools.device)[0].eval() if twin else None
        mine, theirs = [], []
        for path in photos:
            c = load_content(path, params.image_size, tools)
            with torch.inference_mode():
                result = em.to_numpy(stylize(net, em.to_tensor(c.arr, tools.device), [(stats, 1.0)]))
            mine.append({"painting": painting.stem, "image": c.name,
                         **image_metrics(result, c, grams, lab, tools)})
            twin_result = None
            if twin_net is not None:
                with torch.inference_mode():
                    twin_result = em.run_network(twin_net, c.arr, tools.device)
                theirs.append(image_metrics(twin_result, c, grams, lab, tools))
            if len(mine) <= params.report_images:  # the report's grid: arrays, written after its reset
                shown.setdefault(painting.stem, {"painting": arr, "results": []})["results"].append(
                    (c.name, c.arr, result, twin_result))
        m = mean_metrics(mine)
        if theirs:
            m["per_style"] = {"model": twin, **mean_metrics(theirs)}
        per_painting[painting.stem] = m
        rows += mine
    metrics = {"paintings": len(paintings), "images": len(photos)}
    for key in ("style_loss_drop", "ssim", "colour_distance", "content_loss"):
        metrics[key] = float(np.mean([m[key] for m in per_painting.values()]))
        metrics.update({f"{key}_{p}": m[key] for p, m in per_painting.items()})
        metrics.update({f"{key}_{p}_{m['per_style']['model']}": m["per_style"][key]
                        for p, m in per_painting.items() if "per_style" in m})
    metrics["train_steps"] = sidecar.get("steps", 0)
    return {"metrics": {k: _round(v) for k, v in metrics.items()}, "paintings": per_painting, "images": rows,
            "shown": shown, "sidecar": sidecar}


def mean_metrics(rows: list[dict]) -> dict:
    """Per-image yardstick rows -> their means, and the style-loss drop of those means."""
    m = {k: float(np.mean([r[k] for r in rows])) for k in IMAGE_METRICS if k in rows[0]}
    m["style_loss_drop"] = 1.0 - m["style_loss"] / max(m["style_loss_content"], 1e-12)
    return m


def evaluate(params: Params, paths: Paths = Paths()) -> dict:
    """Evaluate every style model; write metrics.json, the report and its tables; return the summary."""
    ev = params.evaluate
    style_models = {name: m for name, m in params.models.items() if m.family in STYLE_FAMILIES}
    for name, m in params.models.items():
        if (name not in style_models and m.family != "adain" and registry.info(m.family).runner != "sample"
                and not registry.info(m.family).translates):
            log.info("model %s (%s): nothing to evaluate (no trained network)", name, m.family)
    tools, lpips = build_tools(ev, paths)
    log.info("evaluating %d style model(s) at %d px, %s", len(style_models), ev.image_size,
             describe_device(tools.device))
    styles = {name: evaluate_style(name, find_val_images(paths.processed / m.dataset / "val"), ev, paths, tools)
              for name, m in style_models.items()}
    # a johnson model's painting, by preprocess's name for it (its sha256[:16]): adain puts them side by side
    per_style = {sha256_file(Path(r["style_image"]))[:16]: name for name, r in styles.items()}
    arbitrary = {name: evaluate_adain(name, m, ev, paths, tools, per_style)
                 for name, m in params.models.items() if m.family == "adain"}
    samplers = {name: m for name, m in params.models.items() if registry.info(m.family).runner == "sample"}
    extractor = distributions.effnet_extractor(tools.device) if samplers else None
    reals: dict = {}
    generators = {name: evaluate_generator(name, m.family, ev, paths, tools.device, reals, extractor,
                                           getattr(m.infer, "truncation", None))
                  for name, m in samplers.items()}
    translators = {name: m for name, m in params.models.items() if registry.info(m.family).translates}
    if translators and extractor is None:
        extractor = distributions.effnet_extractor(tools.device)

    # No time and no machine in here: summary.json and the report are DVC outputs (timings.json has both).
    summary = {
        "evaluation": {"encoder": em.EVAL_ENCODER, "style_layers": tools.style_layers,
                       "content_layers": tools.content_layers, "image_size": ev.image_size,
                       "timing_repeats": ev.timing_repeats, "gate": ev.gate.model_dump()},
        "lpips": lpips,
        "styles": styles,
        "generators": generators,
        "adain": arbitrary,
    }
    report.reset(paths.report)  # (translators write their grids into it)
    summary["translators"] = {name: evaluate_translator(name, m, ev, paths, tools.device, extractor)
                              for name, m in translators.items()}
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    every = {**{s: headline(r["metrics"]) for s, r in styles.items()},
             **{g: headline(r["metrics"]) for g, r in generators.items()},
             **{a: r["metrics"] for a, r in arbitrary.items()},
             **{t: r["metrics"] for t, r in summary["translators"].items()}}
    paths.metrics.write_text(json.dumps(every, indent=2) + "\n")
    pd.DataFrame([row for r in styles.values() for row in r["images"]]).to_csv(
        paths.report / "per_image.csv", index=False, float_format="%.6g")
    for name, r in arbitrary.items():  # the grids' images, from the arrays still in memory
        r["grid"] = report.write_adain_images(name, r.pop("shown"), paths.report)
    for name, r in generators.items():  # sample grids, from the networks still in memory
        r["grids"] = generation.write_grids(r.pop("net"), r["model"]["sidecar"], r.pop("real"),
                                            paths.report / "images" / name)
    (paths.report / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    report.write_report(summary, paths.report, ev)
    write_plot_images(summary, paths, ev.report_images)
    log.info("metrics: %s; report: %s", paths.metrics, paths.report / "index.html")
    return summary


PLOT_ROW = 128  # px: the height of each row of a key image


def write_plot_images(summary: dict, paths: Paths, n: int) -> None:
    """One key image per model in <report>/../plots/<model>.png, declared as DVC image plots, so
    `dvc plots diff` shows experiments side by side: a style model's first n held-out photos over
    their stylized results; a generator's sample grid."""
    from PIL import Image

    out = paths.report.parent / "plots"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, r in summary["styles"].items():
        rows = r["images"][:n]
        pairs = []
        for row in rows:
            pair = []
            for key in ("content_path", "result_path"):
                with Image.open(row[key]) as im:
                    im = im.convert("RGB")
                    pair.append(im.resize((max(1, round(im.width * PLOT_ROW / im.height)), PLOT_ROW),
                                          Image.Resampling.LANCZOS))
            pairs.append(pair)
        if not pairs:
            continue
        width = sum(max(a.width, b.width) for a, b in pairs) + 4 * (len(pairs) - 1)
        sheet = Image.new("RGB", (width, 2 * PLOT_ROW + 4), "white")
        x = 0
        for a, b in pairs:
            sheet.paste(a, (x, 0))
            sheet.paste(b, (x, PLOT_ROW + 4))
            x += max(a.width, b.width) + 4
        sheet.save(out / f"{name}.png", optimize=False)
    for name, r in summary.get("generators", {}).items():
        grid = paths.report / "images" / name / r.get("grids", {}).get("samples", "")
        if grid.is_file():
            shutil.copyfile(grid, out / f"{name}.png")
    for name, r in summary.get("translators", {}).items():  # input | output | target rows
        shutil.copyfile(paths.report / r["grid"], out / f"{name}.png")


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m tasks.evaluate", description=__doc__.split("\n\n")[0]).parse_args(argv)
    run_main("evaluate", lambda: evaluate(load_params()))


if __name__ == "__main__":
    main()
