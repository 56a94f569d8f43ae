"""`python -m tasks.download` and `python -m tasks.preprocess` as DVC runs them: subprocesses in a
copy of the project with a tiny params.yaml whose sources are served from 127.0.0.1."""
from __future__ import annotations

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

REPO = Path(__file__).resolve().parents[1]


def stage(project: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"tasks.{name}"], cwd=project, text=True,
                          capture_output=True, timeout=120)


@pytest.fixture
def project(tmp_path):
    dest = tmp_path / "project"
    for name in ("stylepipe", "tasks"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def write_params(project: Path, content: list[dict], style_url: str) -> None:
    params = {
        "download": {"content": content, "retries": 2, "backoff_s": 0, "timeout_s": 10},
        "styles": {"tiny": {"source": {"url": style_url}}},
        "preprocess": {"train_size": 32, "workers": 2, "max_reject_fraction": 0.9},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))


def test_both_stages_run_as_modules_on_the_hostile_corpus(project, tmp_path):
    images = {**corpus.good_images(), **{n: d for n, (d, _) in corpus.bad_images().items()}}
    archive = corpus.zip_bytes(list(images.items()))
    with HostileServer() as server:
        url = server.add("/corpus.zip", archive, cut_first=1)
        write_params(project, [{"url": url}, {"url": "pkg://skimage/data/camera.png"}],
                     "pkg://skimage/data/chelsea.png")
        (project / "data").mkdir()  # a clone has data/ (.gitkeep); everything else must stay as it is
        before = snapshot(tmp_path)
        download = stage(project, "download")
        assert download.returncode == 0, download.stderr
        manifest = (project / "data/raw/content/manifest.json").read_bytes()
        again = stage(project, "download")  # idempotent: nothing fetched, manifest bytes unchanged
        assert again.returncode == 0, again.stderr
        assert len(server.routes["/corpus.zip"].requests) == 2  # one cut, one resumed; none on re-run
    assert (project / "data/raw/content/manifest.json").read_bytes() == manifest
    assert "content: 28 files from 2 sources (0 fetched, 28 already here)" in again.stderr

    pre = stage(project, "preprocess")
    assert pre.returncode == 0, pre.stderr
    assert "preprocess: 23 ok" in pre.stderr and "5 rejected (empty 1, not-an-image 1, too-large 1, truncated 2)" in pre.stderr
    m = pd.read_parquet(project / "data/processed/manifest.parquet")
    assert len(m) == 28 and (m.status == "ok").sum() == 23
    assert json.loads((project / "data/raw/styles/tiny/manifest.json").read_text())[0]["size"] > 0
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
