"""The DVC stage `python -m tasks.infer --model NAME` on a style model: val images in, only images out (the
ledger lives outside the DVC out), stale outputs pruned, clear errors for missing inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from stylepipe.config import load_params
from tasks import infer as stage
from tests.conftest import REPO_ROOT
from tests.tasks.bulk.test_support import all_files, make_photos, save_random_model


def style_model(root: Path) -> tuple[str, str]:
    """(name, dataset) of params.yaml's first johnson model."""
    models = load_params(root / "params.yaml").models
    return next((name, m.dataset) for name, m in models.items() if m.family == "johnson")


def style_of(project: Path) -> str:
    return style_model(project)[0]


def val_of(project: Path) -> Path:
    return project / "data/processed" / style_model(project)[1] / "val"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO_ROOT / "sources", tmp_path / "sources")
    save_random_model(tmp_path / "data/models" / style_of(tmp_path))
    make_photos(val_of(tmp_path), ["0011aabb.png", "22cc33dd.png", "44ee55ff.png"], size=(80, 60))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_writes_only_images_and_keeps_its_ledger_outside(project):
    style = style_of(project)
    stage.main(["--model", style])
    out = project / "data/infer" / style
    assert all_files(out) == ["0011aabb.jpg", "22cc33dd.jpg", "44ee55ff.jpg"]  # no hidden files
    for name in all_files(out):
        with Image.open(out / name) as im:
            assert im.mode == "RGB" and im.size == (80, 60)
    assert (project / ".cache/infer" / style / "ledger.sqlite").is_file()


def test_stage_resumes_and_prunes_outputs_of_removed_inputs(project):
    style = style_of(project)
    params = load_params()
    stage.run_stage(style, params)
    (val_of(project) / "22cc33dd.png").unlink()
    again = stage.run_stage(style, params)
    assert again.run.processed == 0
    assert all_files(project / "data/infer" / style) == ["0011aabb.jpg", "44ee55ff.jpg"]


def test_stage_fails_on_a_bad_held_out_image(project):
    (val_of(project) / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--model", style_of(project)])
    assert exit_info.value.code == 1


@pytest.mark.parametrize("missing,message", [("models", "has no trained model: run the train stage"),
                                             ("val", "is missing: run the preprocess stage")])
def test_stage_exits_1_with_a_clear_message(project, caplog, missing, message):
    shutil.rmtree(project / "data/models" if missing == "models" else val_of(project))
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--model", style_of(project)])
    assert exit_info.value.code == 1
    assert message in caplog.text


def test_unknown_model(project, caplog):
    with pytest.raises(SystemExit):
        stage.main(["--model", "no-such-model"])
    assert "unknown model 'no-such-model'" in caplog.text


def test_a_sample_model_draws_its_count_of_seeds_for_every_class(project):
    """A generator (params.yaml's cgan model) has no val images: its job is `infer.count` seeds,
    dealt over every class its sidecar declares, written as PNGs to data/infer/<model>."""
    import json

    params = load_params()
    name, entry = next((n, m) for n, m in params.models.items() if m.family == "cgan")
    model_dir = project / "data/models" / name
    model_dir.mkdir(parents=True)
    (model_dir / "model.json").write_text(json.dumps({"family": "cgan", "conditional": True, "num_classes": 3}))
    job = stage.stage_job(name, params)
    assert job.source == f"seeds:{entry.infer.seed}+{entry.infer.count}:0,1,2"
    assert job.out == Path("data/infer") / name and job.params.format == "png"
    assert job.ledger == Path(".cache/infer") / name / "ledger.sqlite"
    assert job.models[0].truncation is None  # plain noise unless infer.truncation says otherwise


def test_infer_truncation_reaches_the_sampling_job(project):
    """infer.truncation (GANs' truncation trick) travels in the job's ModelSpec, whose ledger
    identity it changes (tests/models/test_truncation.py)."""
    import json

    from stylepipe.config import validate

    raw = load_params().model_dump()
    name = next(n for n, m in raw["models"].items() if m["family"] == "cgan")
    raw["models"][name]["infer"]["truncation"] = 1.5
    model_dir = project / "data/models" / name
    model_dir.mkdir(parents=True)
    (model_dir / "model.json").write_text(json.dumps({"family": "cgan", "conditional": True, "num_classes": 3}))
    assert stage.stage_job(name, validate(raw)).models[0].truncation == 1.5
