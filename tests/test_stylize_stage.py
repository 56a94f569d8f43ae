"""The DVC stage `python -m tasks.stylize --style NAME`: val images in, only images out (the
ledger lives outside the DVC out), stale outputs pruned, clear errors for missing inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from stylepipe.config import load_params
from tasks import stylize as stage
from tests.conftest import REPO_ROOT
from tests.test_stylize_support import all_files, make_photos, save_random_model


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    style = next(iter(load_params(tmp_path / "params.yaml").styles))
    save_random_model(tmp_path / "data/models" / style)
    make_photos(tmp_path / "data/processed/val", ["0011aabb.png", "22cc33dd.png", "44ee55ff.png"], size=(80, 60))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def style_of(project: Path) -> str:
    return next(iter(load_params(project / "params.yaml").styles))


def test_stage_writes_only_images_and_keeps_its_ledger_outside(project):
    style = style_of(project)
    stage.main(["--style", style])
    out = project / "data/stylized" / style
    assert all_files(out) == ["0011aabb.jpg", "22cc33dd.jpg", "44ee55ff.jpg"]  # no hidden files
    for name in all_files(out):
        with Image.open(out / name) as im:
            assert im.mode == "RGB" and im.size == (80, 60)
    assert (project / ".cache/stylize" / style / "ledger.sqlite").is_file()


def test_stage_resumes_and_prunes_outputs_of_removed_inputs(project):
    style = style_of(project)
    params = load_params()
    stage.run_stage(style, params)
    (project / "data/processed/val/22cc33dd.png").unlink()
    again = stage.run_stage(style, params)
    assert again.run.processed == 0
    assert all_files(project / "data/stylized" / style) == ["0011aabb.jpg", "44ee55ff.jpg"]


def test_stage_fails_on_a_bad_held_out_image(project):
    (project / "data/processed/val/broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--style", style_of(project)])
    assert exit_info.value.code == 1


@pytest.mark.parametrize("missing,message", [("data/models", "has no trained model"),
                                             ("data/processed/val", "is missing")])
def test_stage_exits_1_with_a_clear_message(project, caplog, missing, message):
    shutil.rmtree(project / missing)
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--style", style_of(project)])
    assert exit_info.value.code == 1
    assert message in caplog.text


def test_unknown_style(project, caplog):
    with pytest.raises(SystemExit):
        stage.main(["--style", "no-such-style"])
    assert "unknown style" in caplog.text
