"""End to end: the real Prefect flow runs the real DVC stages (real training, tiny config) in a
temporary git + DVC copy of the project; then plain `dvc repro` on a clean clone, and a
push / pull round trip through a local DVC remote."""
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from flows.pipeline import QualityGateBlocked, pipeline
from stylepipe.config import load_params, write_overrides
from tests.conftest import run

pytestmark = pytest.mark.e2e

STYLE = "swirls"    # params.yaml's johnson model, on the photos dataset
SAMPLER = "digits"  # its cgan model, on mnist
TINY = [
    f"models.{STYLE}.train.steps=6", f"models.{STYLE}.train.image_size=48", f"models.{STYLE}.train.batch_size=2",
    f"models.{STYLE}.train.log_every=2", f"models.{STYLE}.train.checkpoint_every=3",
    f"models.{SAMPLER}.train.steps=4", f"models.{SAMPLER}.train.batch_size=8", f"models.{SAMPLER}.train.log_every=2",
    f"models.{SAMPLER}.train.preview_every=0", f"models.{SAMPLER}.infer.count=6",
    "preprocess.train_size=64", "stylize.max_size=96",
    "evaluate.image_size=64", "evaluate.report_images=2", "evaluate.timing_sizes=[64]",
    "evaluate.timing_repeats=1", "evaluate.gate.latency_size=64",
    # Six training steps cannot meet the default quality bar; the gate itself is tested below.
    "evaluate.gate.min_style_drop=0", "evaluate.gate.min_ssim=0",
    # ... nor can four steps of the generator meet the generation gate's.
    "evaluate.generation_samples=100", "evaluate.generation_gate.min_label_accuracy=0",
    "evaluate.generation_gate.min_confident_fraction=0", "evaluate.generation_gate.max_fd_ratio=1000000.0",
]


def tiny_project(project: Path) -> Path:
    write_overrides(project / "params.yaml", TINY)
    photos = project / "sources/photos.yaml"
    # Five of the default photos keep the run short; the download path is the default one.
    lines = photos.read_text().splitlines(keepends=True)
    sources = [i for i, line in enumerate(lines) if line.lstrip().startswith('- {url: "pkg://skimage/')]
    photos.write_text("".join(line for i, line in enumerate(lines) if i not in sources[5:]))
    subprocess.run(["git", "commit", "-qam", "tiny params", "--author", "t <t@t>"], cwd=project,
                   check=True, env={"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                                    "PATH": "/usr/bin:/bin"})
    return project


def assert_outputs(project: Path) -> dict:
    params = load_params(project / "params.yaml")
    style, tp = STYLE, params.model(STYLE).train
    processed = project / "data/processed" / params.model(STYLE).dataset
    model_dir = project / "data/models" / style
    sidecar = json.loads((model_dir / "model.json").read_text())
    assert (model_dir / "model.safetensors").stat().st_size > 10_000
    assert sidecar["steps"] == tp.steps and sidecar["network"] == tp.network and sidecar["family"] == "johnson"

    manifest = pd.read_parquet(processed / "manifest.parquet")
    assert len(manifest) == 5 and set(manifest["status"]) == {"ok"}
    val = sorted((processed / "val").glob("*.png"))
    assert val and len(val) + len(list((processed / "train").glob("*.png"))) == 5

    sampler = json.loads((project / "data/models" / SAMPLER / "model.json").read_text())
    assert sampler["family"] == "cgan" and sampler["steps"] == params.model(SAMPLER).train.steps
    samples = sorted(p for p in (project / "data/infer" / SAMPLER).rglob("*") if p.is_file())
    assert len(samples) == params.model(SAMPLER).infer.count and all(p.suffix == ".png" for p in samples)

    stylized = sorted((project / "data/infer" / style).iterdir())
    assert [p.stem for p in stylized] == [p.stem for p in val]
    for path in stylized:
        with Image.open(path) as im:
            assert max(im.size) <= params.stylize.max_size and im.mode == "RGB"

    log_rows = (project / "metrics/train" / f"{style}.tsv").read_text().splitlines()
    assert log_rows[0].split("\t")[:2] == ["step", "total"] and len(log_rows) == 1 + 3

    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert style in metrics and all(isinstance(v, (int, float)) for v in metrics[style].values())
    assert (project / "data/eval/report/index.html").is_file()
    return metrics


def assert_up_to_date(project: Path) -> None:
    """Nothing to run but download, which is always_changed (it re-lists its sources every run)."""
    status = run(["dvc", "status"], cwd=project, check=True).stdout
    rest = [line.strip() for line in status.splitlines()
            if line.strip() and line.strip() not in ("download:", "always changed")]
    assert rest == [] or "up to date" in status, status


def test_flow_runs_pipeline_and_dvc_is_clean(prefect_server, project_copy, tmp_path):
    project = tiny_project(project_copy)
    metrics = pipeline(repo_root=str(project))
    assert metrics == json.loads((project / "metrics/metrics.json").read_text())
    assert metrics["swirls"]["promoted"] == 1
    assert (project / "data/published/swirls/model.safetensors").is_file()
    assert_outputs(project)
    assert_up_to_date(project)
    lock = (project / "dvc.lock").read_text()
    for stage in ("download", "preprocess@photos", "preprocess@mnist", "train@swirls", "infer@swirls",
                  "train@digits", "infer@digits", "evaluate"):
        assert f"  {stage}:" in lock

    # Push everything to a local remote, lose the workspace copies, pull them back.
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--local", "-f", "-d", "e2e", str(remote)], cwd=project, check=True)
    run(["dvc", "push"], cwd=project, check=True)
    model = project / "data/models/swirls/model.safetensors"
    before = model.read_bytes()
    subprocess.run(["rm", "-rf", "data/models", "data/processed"], cwd=project, check=True)
    run(["dvc", "pull"], cwd=project, check=True)
    assert model.read_bytes() == before
    assert_up_to_date(project)

    # A new candidate (another seed) under a quality bar it cannot meet: the flow run fails and
    # says why; the candidate, its report and the previously promoted model all stay.
    published = (project / "data/published/swirls/model.safetensors").read_bytes()
    write_overrides(project / "params.yaml", ["evaluate.gate.min_style_drop=0.999", f"models.{STYLE}.train.seed=1"])
    with pytest.raises(QualityGateBlocked, match="swirls blocked"):
        pipeline(repo_root=str(project))
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert (metrics["swirls"]["gate_passed"], metrics["swirls"]["promoted"]) == (0, 0)
    assert (project / "data/eval/report/index.html").is_file()
    assert model.read_bytes() != published  # the blocked candidate is kept beside the published one
    assert (project / "data/published/swirls/model.safetensors").read_bytes() == published


def test_plain_dvc_repro_on_clean_clone(tmp_path, project_copy):
    """A researcher's path: no Prefect, just `dvc repro` on a fresh clone."""
    project = tiny_project(project_copy)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    result = run(["dvc", "repro"], cwd=clone)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_outputs(clone)
    assert_up_to_date(clone)
    again = run(["dvc", "repro"], cwd=clone, check=True).stdout
    # download always runs (it re-lists its sources); finding the same bytes, it leaves the rest cached
    ran = [line for line in again.splitlines() if line.startswith("Running stage")]
    assert "didn't change, skipping" in again and ran == ["Running stage 'download':"], again

    # Reproducible outputs: commit what this clone produced; a fresh clone of that commit, run
    # from scratch, gives the same bytes (no timestamps, machine names or commit hashes inside
    # hashed outputs), so git status stays clean.
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=clone, check=True)
    subprocess.run([*git, "commit", "-qm", "results"], cwd=clone, check=True)
    fresh = tmp_path / "fresh"
    subprocess.run(["git", "clone", "-q", str(clone), str(fresh)], check=True)
    result = run(["dvc", "repro"], cwd=fresh)
    assert result.returncode == 0, result.stdout + result.stderr
    status = subprocess.run(["git", "status", "--porcelain"], cwd=fresh, capture_output=True, text=True).stdout
    assert status == "", status
