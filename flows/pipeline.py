"""The Prefect flow: run dvc.yaml's stages in DVC's order, one Prefect task per stage.

Each task runs `dvc repro --single-item <stage>`: DVC decides whether the stage is stale, runs
its cmd (a plain `python -m tasks.<stage>`, no Prefect inside), and records dvc.lock. Prefect adds
retries, logs, artifacts and schedules. docs/architecture.md says why it is split this way.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.dag import select_stages, stage_order


def stage_env() -> dict[str, str]:
    """The environment for stage subprocesses: this interpreter's bin dir first, so dvc.yaml's
    `python` is the one stylepipe runs in even when the venv is not activated."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TQDM_MININTERVAL", "5")  # progress lines become log lines: keep them few
    env["PYTHONUNBUFFERED"] = "1"
    return env


def dvc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


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


def publish_artifacts(repo_root: Path) -> dict:
    """Markdown + table artifacts for the Prefect UI, from evaluate's outputs."""
    metrics_path = repo_root / "data/eval/metrics.json"
    report = repo_root / "data/eval/report/index.html"
    if not metrics_path.is_file():
        return {}
    metrics = json.loads(metrics_path.read_text())
    rows = [{"style": style, **values} for style, values in metrics.items() if isinstance(values, dict)]
    create_table_artifact(key="stylepipe-metrics", table=rows, description="metrics.json per style")
    create_markdown_artifact(
        key="stylepipe-report",
        markdown=f"# stylepipe run\n\nReport: [{report}](file://{report})\n\n"
        f"Styles: {', '.join(r['style'] for r in rows)}\n",
    )
    return metrics


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
    return publish_artifacts(root)
