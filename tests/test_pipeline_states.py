"""How a pipeline run reads in Prefect: up-to-date stages as a Skipped state, stage log lines at
their own level, retries for crashes only, a progress artifact for a stage that reports progress,
and the stage table artifact. A tiny DVC project with hand-made stages, on a real temporary server."""
from __future__ import annotations

import asyncio
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

from flows.pipeline import StageFailed, pipeline

STAGE = textwrap.dedent('''
    import logging, os, sys
    from pathlib import Path
    from stylepipe.config import ConfigError
    from stylepipe.stage import run_main
    kind = sys.argv[1]
    Path("attempts").mkdir(exist_ok=True)
    with open(f"attempts/{kind}", "a") as f:
        f.write("x")
    tries = len(Path(f"attempts/{kind}").read_text())
    def body():
        log = logging.getLogger("stylepipe.t")
        if kind == "ok":
            log.warning("careful: a warning line")
            for p in (10, 50, 100):
                print(f"work: {p:3d}%|#####| {p}/100", file=sys.stderr, flush=True)
            Path("out-ok.txt").write_text("ok")
        elif kind == "config":
            raise ConfigError("bad.key: not allowed")
        elif kind == "crash" and tries == 1:
            os.kill(os.getpid(), 9)
        else:
            Path(f"out-{kind}.txt").write_text(kind)
    run_main(kind, body)
''')


def tiny_repo(root: Path) -> Path:
    root.mkdir()
    (root / "stage.py").write_text(STAGE)
    stages = {k: {"cmd": f"python stage.py {k}", "deps": ["stage.py"], "outs": [f"out-{k}.txt"]}
              for k in ("ok", "config", "crash")}
    import yaml
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (root / ".gitignore").write_text("attempts/\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


async def _task_runs_and_logs(flow_run_id):
    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts()
    return runs, logs, artifacts


def attempts(repo: Path, kind: str) -> int:
    p = repo / "attempts" / kind
    return len(p.read_text()) if p.exists() else 0


@pytest.fixture
def repo(tmp_path, monkeypatch):
    import sys
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    return tiny_repo(tmp_path / "repo")


def test_skipped_levels_progress_and_retries(prefect_server, repo):
    # First run: ok runs; then a second run of ok alone: skipped.
    state = pipeline(repo_root=str(repo), stages=["ok"], return_state=True)
    assert state.is_completed(), state
    state = pipeline(repo_root=str(repo), stages=["ok"], return_state=True)
    assert state.is_completed()
    runs, logs, artifacts = asyncio.run(_task_runs_and_logs(state.state_details.flow_run_id))
    (ok,) = [r for r in runs if r.name == "ok"]
    assert ok.state.name == "Skipped" and ok.state.type.value == "COMPLETED"

    first = pipeline(repo_root=str(repo), stages=["ok"], force=True, return_state=True)
    # Prefect ships logs to the server in batches, after the run's state: wait for the line
    deadline = time.monotonic() + 30
    while True:
        runs, logs, artifacts = asyncio.run(_task_runs_and_logs(first.state_details.flow_run_id))
        warning = [log for log in logs if "careful: a warning line" in log.message]
        if warning or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    (ok,) = [r for r in runs if r.name == "ok"]
    assert ok.state.name == "Completed"
    assert warning and warning[0].level == 30
    assert any(a.type == "progress" and a.data == 100 for a in artifacts)
    assert any(a.key == "stylepipe-stages" for a in artifacts)

    # A config error (exit code 1) is not retried; a crash (killed by a signal) is, once.
    with pytest.raises(StageFailed, match="bad input or configuration"):
        pipeline(repo_root=str(repo), stages=["config"])
    assert attempts(repo, "config") == 1
    state = pipeline(repo_root=str(repo), stages=["crash"], return_state=True)
    assert state.is_completed(), state
    assert attempts(repo, "crash") == 2
