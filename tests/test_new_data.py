"""Nightly runs see new data: `download` runs on every `dvc repro` (always_changed), re-lists its
sources, and rewrites data/raw only where content changed. Unchanged data keeps the stages below it
cached; a source folder that gained a photo makes them run again."""
from __future__ import annotations

import json

import yaml

from tests.conftest import run
from tests.tasks.bulk.test_support import make_photos


def repro(project, *targets) -> str:
    result = run(["dvc", "repro", *targets], cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_download_relists_sources_and_keeps_unchanged_data_cached(project_copy, tmp_path):
    photos = tmp_path / "incoming"
    make_photos(photos, ["a.jpg", "b.jpg", "c.jpg"], size=(96, 64))
    params_path = project_copy / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["datasets"] = {"photos": {"kind": "photos", "sources": [{"url": str(photos)}]}}
    params["models"] = {"swirls": params["models"]["swirls"]}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    out = repro(project_copy, "preprocess@photos")
    assert "Running stage 'download'" in out and "Running stage 'preprocess@photos'" in out
    manifest = project_copy / "data/raw/datasets/photos/manifest.json"
    before = manifest.read_bytes()
    assert "fetched_at" not in before.decode()  # no timestamps in a hashed output

    # Nothing new: download runs (it has to look), finds the same bytes, preprocess stays cached.
    out = repro(project_copy, "preprocess@photos")
    assert "Running stage 'download'" in out
    assert "Stage 'preprocess@photos' didn't change, skipping" in out
    assert manifest.read_bytes() == before

    # A new photo in the source folder: seen without touching params.yaml, and preprocessed.
    make_photos(photos, ["d.jpg"], size=(80, 64))
    out = repro(project_copy, "preprocess@photos")
    assert "Running stage 'preprocess@photos'" in out
    assert len(json.loads(manifest.read_text())) == 4

    # The source list is not an experiment column (its content is tracked through data/raw).
    lock = yaml.safe_load((project_copy / "dvc.lock").read_text())
    assert "datasets" not in json.dumps(lock["stages"]["download"].get("params", {}))
