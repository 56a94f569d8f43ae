"""The Prefect flow: run dvc.yaml's stages in DVC's order, one Prefect task per stage.

Each task runs `dvc repro --single-item <stage>`: DVC decides whether the stage is stale, runs
its cmd (a plain `python -m tasks.<stage>`, no Prefect inside), and records dvc.lock. Prefect adds
retries, logs, artifacts and schedules. docs/architecture.md says why it is split this way.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.dag import select_stages, stage_order
from stylepipe.stage import dvc_command, stage_env




@task(name="dvc-stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5)
def run_stage(stage: str, repo_root: str, force: bool = False) -> None:
    logger = get_run_logger()
    cmd = dvc_command("repro", "--single-item", *(["--force"] if force else []), stage)
    logger.info("$ %s", " ".join(cmd[2:]))
    proc = subprocess.Popen(
        cmd, cwd=repo_root, env=stage_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # universal newlines: tqdm's \r updates arrive as lines too
        if line.strip():
            logger.info(line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"stage {stage} failed (exit code {proc.returncode}); its log is above")


@task(name="dvc-status")
def check_status(repo_root: str) -> str:
    out = subprocess.run(
        dvc_command("status"), cwd=repo_root, env=stage_env(), text=True,
        capture_output=True, check=True,
    ).stdout.strip()
    get_run_logger().info("dvc status: %s", out)
    return out


METRICS = Path("metrics/metrics.json")
REPORT = Path("data/eval/report/index.html")
EVAL_SUMMARY = Path("data/eval/report/summary.json")


def publish_artifacts(repo_root: Path) -> dict:
    """Markdown + table artifacts for the Prefect UI, from evaluate's outputs."""
    if not (repo_root / METRICS).is_file():
        return {}
    metrics = json.loads((repo_root / METRICS).read_text())
    report = repo_root / REPORT
    rows = [{"style": style, **values} for style, values in metrics.items()]
    create_table_artifact(key="stylepipe-metrics", table=rows, description="metrics.json per style")
    lines = [f"# stylepipe run\n\nReport: [{report}](file://{report})\n",
             "| style | gate | promoted | style loss drop | SSIM |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['style']} | {'pass' if row.get('gate_passed') else 'BLOCKED'} | "
                     f"{'yes' if row.get('promoted') else 'no'} | {row.get('style_loss_drop', 0):.2f} | "
                     f"{row.get('ssim', 0):.3f} |")
    create_markdown_artifact(key="stylepipe-report", markdown="\n".join(lines))
    return metrics


class QualityGateBlocked(RuntimeError):
    """A candidate model failed evaluate's quality gate; it and its report are kept, not promoted."""


@task(name="quality-gate")
def check_quality_gate(repo_root: str) -> None:
    """Fail the run, with evaluate's reasons, when any model's candidate (style or generator) was
    blocked."""
    summary_path = Path(repo_root) / EVAL_SUMMARY
    if not summary_path.is_file():
        return
    summary = json.loads(summary_path.read_text())
    styles = {**summary.get("styles", {}), **summary.get("generators", {})}
    blocked = {name: s.get("reason", "") for name, s in styles.items() if s.get("decision") == "blocked"}
    for name, s in styles.items():
        get_run_logger().info("quality gate %s: %s. %s", name, s.get("decision"), s.get("reason", ""))
    if blocked:
        raise QualityGateBlocked("; ".join(f"{name} blocked: {why}" for name, why in blocked.items()))


@flow(name="stylepipe-pipeline", log_prints=True)
def pipeline(repo_root: str = ".", stages: list[str] | None = None, force: bool = False) -> dict:
    """Run the dvc.yaml pipeline (or the named stages) in DVC's order; returns evaluate's metrics."""
    root = Path(repo_root).resolve()
    order = stage_order(root)
    selected = select_stages(order, stages) if stages else order
    get_run_logger().info("stages in order: %s", " -> ".join(selected))
    for stage in selected:  # one at a time: `dvc repro` holds the repository lock
        run_stage(stage, str(root), force=force)
    check_status(str(root))
    metrics = publish_artifacts(root)
    check_quality_gate(str(root))
    return metrics
