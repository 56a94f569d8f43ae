"""The Prefect flow: run dvc.yaml's stages in DVC's order, one Prefect task per stage.

Each task runs `dvc repro --single-item <stage>`: DVC decides whether the stage is stale, runs
its cmd (a plain `python -m tasks.<stage>`, no Prefect inside), and records dvc.lock. Prefect adds
retries, logs, artifacts and schedules. docs/architecture.md says why it is split this way.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.states import Completed, Failed, State

from flows.dag import select_stages, stage_order
from stylepipe import timings
from stylepipe.stage import EXIT_BAD_INPUT, dvc_command, stage_env




# Exit codes of a stage process (stylepipe.stage.run_main) that mean bad input or configuration:
# running it again cannot help, so they are never retried. argparse's usage error is 2.
BAD_INPUT_EXIT_CODES = (EXIT_BAD_INPUT, 2)
_DVC_EXIT = re.compile(r"exited with (-?\d+)")
_LEVEL = re.compile(r"^(?:\S+ \S+ \S+ )?(ERROR|WARNING|CRITICAL)\b|^(ERROR|WARNING):")  # ours, or DVC's
_PERCENT = re.compile(r"(\d{1,3})%\|")  # a tqdm progress line
_SKIPPED = re.compile(r"Stage '.*' didn't change, skipping")


class StageFailed(RuntimeError):
    """A stage's command failed; `exit_code` is the stage process's (None: DVC itself failed)."""

    def __init__(self, stage: str, exit_code: int | None):
        self.stage, self.exit_code = stage, exit_code
        how = f"exit code {exit_code}" if exit_code is not None else "dvc failed"
        hint = " (bad input or configuration: not retried)" if exit_code in BAD_INPUT_EXIT_CODES else ""
        super().__init__(f"stage {stage} failed ({how}){hint}; its log is above")


def retry_only_crashes(task, task_run, state) -> bool:
    """Retry a stage that crashed (killed by a signal, out of memory, an unexpected exception), never
    one that refused its input or configuration: that fails the same way every time."""
    try:
        state.result()
    except StageFailed as e:
        return e.exit_code not in BAD_INPUT_EXIT_CODES
    except Exception:  # noqa: BLE001
        return True
    return False


def log_level(line: str) -> int:
    """The level a stage line was logged at (stylepipe's `time name LEVEL msg`, DVC's `ERROR: ...`)."""
    m = _LEVEL.match(line)
    return getattr(logging, (m.group(1) or m.group(2)) if m else "INFO")


class StageProgress:
    """A Prefect progress artifact for a stage that reports progress (tqdm lines); created at the
    first percentage seen, so quick stages make none."""

    def __init__(self, stage: str):
        self.stage, self.id, self.last = stage, None, -1.0

    def line(self, line: str) -> None:
        m = _PERCENT.search(line)
        if not m:
            return
        value = min(100.0, float(m.group(1)))
        if value == self.last:
            return
        self.last = value
        description = f"{self.stage}: {line.strip()[:120]}"
        if self.id is None:
            self.id = create_progress_artifact(progress=value, description=description)
        else:
            update_progress_artifact(self.id, progress=value, description=description)


@task(name="dvc-stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_only_crashes)
def run_stage(stage: str, repo_root: str, force: bool = False) -> str | State:
    """`dvc repro --single-item <stage>`; its lines go to the Prefect log at their own level. An
    up-to-date stage ends in a Completed state named Skipped."""
    logger = get_run_logger()
    cmd = dvc_command("repro", "--single-item", *(["--force"] if force else []), stage)
    logger.info("$ %s", " ".join(cmd[2:]))
    proc = subprocess.Popen(
        cmd, cwd=repo_root, env=stage_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    skipped, exit_code, progress = False, None, StageProgress(stage)
    for line in proc.stdout:  # universal newlines: tqdm's \r updates arrive as lines too
        if not line.strip():
            continue
        logger.log(log_level(line), line.rstrip())
        skipped = skipped or bool(_SKIPPED.search(line))
        if (m := _DVC_EXIT.search(line)) and line.startswith("ERROR"):
            exit_code = int(m.group(1))
        progress.line(line)
    if proc.wait() != 0:
        raise StageFailed(stage, exit_code)
    if skipped and not force:
        return Completed(name="Skipped", message=f"{stage}: up to date (DVC ran nothing)")
    return "ran"


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


def report_link(repo_root: Path) -> str:
    """How the report is shown in an artifact. A browser does not open file:// links from the
    Prefect UI's http(s) page, so the report is a link only when STYLEPIPE_REPORT_URL says where
    data/eval/report is served (e.g. a static file server or a bucket); otherwise its path, to copy."""
    base = os.environ.get("STYLEPIPE_REPORT_URL", "").rstrip("/")
    if base:
        return f"[{base}/index.html]({base}/index.html)"
    return f"`{repo_root / REPORT}` (on the machine that ran the flow; set STYLEPIPE_REPORT_URL to link it)"


def publish_artifacts(repo_root: Path) -> dict:
    """Markdown + table artifacts for the Prefect UI, from evaluate's outputs."""
    if not (repo_root / METRICS).is_file():
        return {}
    metrics = json.loads((repo_root / METRICS).read_text())
    rows = [{"model": name, **values} for name, values in metrics.items()]
    create_table_artifact(key="stylepipe-metrics", table=rows, description="metrics/metrics.json per model")
    lines = [f"# stylepipe run\n\nReport: {report_link(repo_root)}\n",
             "| model | gate | promoted |", "| --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['model']} | {'pass' if row.get('gate_passed') else 'BLOCKED'} | "
                     f"{'yes' if row.get('promoted') else 'no'} |")
    create_markdown_artifact(key="stylepipe-report", markdown="\n".join(lines),
                             description="the evaluation report and the gate's decisions")
    measured = timings.read(repo_root / timings.TIMINGS)
    if measured:
        create_table_artifact(key="stylepipe-timings", table=[{"model": m, **v} for m, v in measured.items()],
                              description="training seconds and inference ms on the machine that ran it")
    return metrics


def publish_stage_table(results: list[dict]) -> None:
    """Which stages ran and which DVC skipped, with their times."""
    create_table_artifact(key="stylepipe-stages", table=results,
                          description="dvc.yaml stages of this run: ran, or skipped as up to date")


class QualityGateBlocked(RuntimeError):
    """A candidate model failed evaluate's quality gate; it and its report are kept, not promoted."""


@task(name="quality-gate")
def check_quality_gate(repo_root: str) -> dict[str, str]:
    """The models whose candidate (style or generator) evaluate's gate blocked, with the reasons. A
    block is the gate working, not the task failing: one log line per model, and an artifact."""
    summary_path = Path(repo_root) / EVAL_SUMMARY
    if not summary_path.is_file():
        return {}
    summary = json.loads(summary_path.read_text())
    models = {**summary.get("styles", {}), **summary.get("generators", {})}
    blocked = {name: s.get("reason", "") for name, s in models.items() if s.get("decision") == "blocked"}
    logger = get_run_logger()
    for name, s in models.items():
        level = logging.WARNING if name in blocked else logging.INFO
        logger.log(level, "quality gate %s: %s. %s", name, s.get("decision"), s.get("reason", ""))
    if blocked:
        create_markdown_artifact(
            key="stylepipe-quality-gate", description="models the quality gate blocked, and why",
            markdown="# Quality gate: blocked\n\n" + "\n".join(f"- **{n}**: {why}" for n, why in blocked.items())
            + f"\n\nThe candidates and the report are kept. Report: {report_link(Path(repo_root))}\n")
    return blocked


@flow(name="stylepipe-pipeline", log_prints=True)
def pipeline(repo_root: str = ".", stages: list[str] | None = None, force: bool = False):
    """Run the dvc.yaml pipeline (or the named stages) in DVC's order; returns evaluate's metrics,
    or a Failed state named Blocked when the quality gate blocked a model."""
    root = Path(repo_root).resolve()
    order = stage_order(root)
    selected = select_stages(order, stages) if stages else order
    get_run_logger().info("stages in order: %s", " -> ".join(selected))
    results = []
    try:
        for stage in selected:  # one at a time: `dvc repro` holds the repository lock
            started = time.monotonic()
            outcome = run_stage(stage, str(root), force=force)  # "ran", or the Skipped state
            results.append({"stage": stage, "state": "ran" if outcome == "ran" else "skipped",
                            "seconds": round(time.monotonic() - started, 1)})
    finally:
        done = {r["stage"] for r in results}
        publish_stage_table(results + [{"stage": s, "state": "not run", "seconds": 0} for s in selected
                                       if s not in done])
    check_status(str(root))
    metrics = publish_artifacts(root)
    blocked = check_quality_gate(str(root))
    if blocked:
        message = "; ".join(f"{n} blocked: {why}" for n, why in blocked.items())
        return Failed(name="Blocked", message=message, data=QualityGateBlocked(message))
    return metrics
