"""`python -m tasks.download` and `python -m tasks.preprocess --dataset NAME` as DVC runs them:
subprocesses in a copy of the project with a tiny params.yaml whose sources are served from 127.0.0.1."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.hostile import corpus
from tests.hostile.guard import changed_outside, snapshot
from tests.hostile.server import HostileServer

REPO = Path(__file__).resolve().parents[2]


def stage(project: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"tasks.{name}", *args], cwd=project, text=True,
                          capture_output=True, timeout=120)


@pytest.fixture
def project(tmp_path):
    dest = tmp_path / "project"
    for name in ("stylepipe", "tasks", "models"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def write_params(project: Path, photos: list[dict], style_url: str, digits: list[dict] | None = None) -> None:
    params = {
        "download": {"retries": 2, "backoff_s": 0, "timeout_s": 10},
        "datasets": {"photos": {"kind": "photos", "sources": photos},
                     **({"digits": {"kind": "labelled", "sources": digits}} if digits else {})},
        "models": {"tiny": {"family": "johnson", "dataset": "photos", "style": {"url": style_url}}},
        "preprocess": {"train_size": 32, "workers": 2, "max_reject_fraction": 0.9},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))


def test_both_stages_run_as_modules_on_the_hostile_corpus(project, tmp_path):
    images = {**corpus.good_images(), **{n: d for n, (d, _) in corpus.bad_images().items()}}
    archive = corpus.zip_bytes(list(images.items()))
    with HostileServer() as server:
        url = server.add("/corpus.zip", archive, cut_first=1)
        digits = [{"url": server.add(f"/mnist/{name}.gz", gzip.compress(data))}
                  for name, data in corpus.idx_set().items()]
        write_params(project, [{"url": url}, {"url": "pkg://skimage/data/camera.png"}],
                     "pkg://skimage/data/chelsea.png", digits)
        (project / "data").mkdir()  # a clone has data/ (.gitkeep); everything else must stay as it is
        before = snapshot(tmp_path)
        download = stage(project, "download")
        assert download.returncode == 0, download.stderr
        manifest = (project / "data/raw/datasets/photos/manifest.json").read_bytes()
        again = stage(project, "download")  # idempotent: nothing fetched, manifest bytes unchanged
        assert again.returncode == 0, again.stderr
        assert len(server.routes["/corpus.zip"].requests) == 2  # one cut, one resumed; none on re-run
    assert (project / "data/raw/datasets/photos/manifest.json").read_bytes() == manifest
    assert "dataset photos: 28 files from 2 sources (0 fetched, 28 already here)" in again.stderr
    assert "dataset digits: 4 files from 4 sources (0 fetched, 4 already here)" in again.stderr

    pre = stage(project, "preprocess", "--dataset", "photos")
    assert pre.returncode == 0, pre.stderr
    assert "preprocess photos: 23 ok" in pre.stderr
    assert "5 rejected (empty 1, not-an-image 1, too-large 1, truncated 2)" in pre.stderr
    m = pd.read_parquet(project / "data/processed/photos/manifest.parquet")
    assert len(m) == 28 and (m.status == "ok").sum() == 23
    assert json.loads((project / "data/raw/models/tiny/manifest.json").read_text())[0]["size"] > 0
    pre = stage(project, "preprocess", "--dataset", "digits")
    assert pre.returncode == 0, pre.stderr
    assert "preprocess digits: 17 labelled 4x3x1 images (12 train, 5 val), 3 classes" in pre.stderr
    assert sorted(p.name for p in (project / "data/processed").iterdir()) == ["digits", "photos"]
    assert json.loads((project / "data/weights/manifest.json").read_text()) == []
    assert changed_outside(before, snapshot(tmp_path), project / "data") == []


def test_a_bad_source_is_one_clear_line_and_exit_code_1(project):
    with HostileServer() as server:
        missing = server.url("/gone.zip")
        write_params(project, [{"url": missing}], "pkg://skimage/data/chelsea.png")
        result = stage(project, "download")
    assert result.returncode == 1
    assert f"{missing}: HTTP 404 Not Found" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_labelled_dataset_is_one_clear_line_and_exit_code_1(project):
    files = {**corpus.idx_set(), "t10k-labels-idx1-ubyte": corpus.idx_set(n_val=4)["t10k-labels-idx1-ubyte"]}
    served = project.parent / "served"
    served.mkdir()
    for name, data in files.items():
        (served / name).write_bytes(data)
    write_params(project, [{"url": "pkg://skimage/data/camera.png"}], "pkg://skimage/data/chelsea.png",
                 [{"url": str(served)}])
    assert stage(project, "download").returncode == 0
    result = stage(project, "preprocess", "--dataset", "digits")
    assert result.returncode == 1
    assert "t10k-images-idx3-ubyte has 5 images but" in result.stderr and "has 4 labels" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "data/processed/digits").exists()
