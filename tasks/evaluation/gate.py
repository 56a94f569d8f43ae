"""The quality gate of the evaluate stage and the promotion of a passing model.

A candidate (data/models/<style>) is promoted to data/published/<style> only if it passes every
check. The published folder holds the model (weights + sidecar) with its metrics and lineage, so a
consumer of published models needs nothing else; it is an output of the evaluate stage kept between
runs (DVC `persist: true`), which is how the next candidate is compared with it.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from models.sidecar import SIDECAR_FILE, WEIGHTS_FILE
from stylepipe.config import GateParams
from stylepipe.hashing import sha256_file

MODEL_FILES = (WEIGHTS_FILE, SIDECAR_FILE)


def _check(name: str, passed: bool, value: float | None, threshold: float | None, message: str) -> dict:
    return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "message": message}


def gate_checks(metrics: dict, gate: GateParams, comparison: dict | None) -> list[dict]:
    """Each check: {name, passed, value, threshold, message}. `comparison` is the head-to-head with
    the published model on the same images (None when nothing different is published)."""
    checks = []
    drop = metrics["style_loss_drop"]
    checks.append(_check(
        "style", drop >= gate.min_style_drop, drop, gate.min_style_drop,
        f"style loss {metrics['style_loss']:.3g} vs {metrics['style_loss_content']:.3g} for the "
        f"unstylized photos: {f'{drop:.0%} lower' if drop >= 0 else f'{-drop:.0%} higher'} "
        f"(needs >= {gate.min_style_drop:.0%} lower)",
    ))
    checks.append(_check(
        "ssim", metrics["ssim"] >= gate.min_ssim, metrics["ssim"], gate.min_ssim,
        f"SSIM to the photo {metrics['ssim']:.3f} (needs >= {gate.min_ssim:.3f})",
    ))
    ms = metrics[f"ms_{gate.latency_size}"]
    checks.append(_check(
        "latency", ms <= gate.max_latency_ms, ms, gate.max_latency_ms,
        f"{ms:.0f} ms per {gate.latency_size} px image (needs <= {gate.max_latency_ms:.0f} ms)",
    ))
    if comparison is None:
        checks.append(_check("regression", True, None, None, "no other model is published for this style"))
    else:
        ratio = comparison["candidate"]["style_loss"] / max(comparison["published"]["style_loss"], 1e-12)
        ssim_drop = comparison["published"]["ssim"] - comparison["candidate"]["ssim"]
        ok = ratio <= 1 + gate.max_style_regression and ssim_drop <= gate.max_ssim_drop
        checks.append(_check(
            "regression", ok, ratio, 1 + gate.max_style_regression,
            f"vs the published model on the same images: style loss x{ratio:.2f} "
            f"(needs <= x{1 + gate.max_style_regression:.2f}), SSIM {-ssim_drop:+.3f} "
            f"(needs >= {-gate.max_ssim_drop:+.3f})",
        ))
    return checks


def decide(checks: list[dict], candidate_sha: str, published_sha: str | None, promote_enabled: bool
           ) -> tuple[str, str]:
    """(decision, reason): promoted | already_published | blocked | passed_not_promoted."""
    failed = "; ".join(c["message"] for c in checks if not c["passed"])
    if published_sha == candidate_sha:
        return "already_published", "this exact model is already the published one" + (
            f", although it no longer passes the gate: {failed}" if failed else "")
    if failed:
        return "blocked", f"not promoted: {failed}"
    if not promote_enabled:
        return "passed_not_promoted", "passed the gate; promotion is off (evaluate.promote: false)"
    return "promoted", "passed the gate" + (
        " and replaced the published model" if published_sha else "; first published model of this style")


def published_sha(published_dir: Path) -> str | None:
    weights = published_dir / MODEL_FILES[0]
    return sha256_file(weights) if weights.is_file() else None


def promote(model_dir: Path, published_dir: Path, metrics: dict, lineage: dict) -> None:
    """Replace published_dir with the candidate's files + metrics.json + lineage.json and append
    the promotion to history.jsonl (carried over from the model it replaces). Built beside the
    target and swapped in with renames, so a crash never leaves a half-written published model."""
    published_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = published_dir.with_name(f".{published_dir.name}.staging")
    retired = published_dir.with_name(f".{published_dir.name}.retired")
    for leftover in (staging, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, staging / name)
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (staging / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")
    history = published_dir / "history.jsonl"
    previous = history.read_text() if history.is_file() else ""
    entry = {k: lineage.get(k) for k in ("promoted_at", "model_sha256", "replaces_sha256")}
    (staging / "history.jsonl").write_text(previous + json.dumps(entry, sort_keys=True) + "\n")
    if published_dir.exists():
        published_dir.rename(retired)
    staging.rename(published_dir)
    shutil.rmtree(retired, ignore_errors=True)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
