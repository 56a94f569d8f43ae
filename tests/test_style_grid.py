"""tasks/style_grid.py: one model per painting in a folder, a grid of results, reuse of finished
models. Tiny images and a few steps; the real run is `stylepipe styles` (README)."""
import json

import numpy as np
import pytest
from PIL import Image

from stylepipe.cli import main as cli
from stylepipe.errors import StageError
from tasks import style_grid
from tests.tiny_training import tiny_params, write_painting, write_photos


@pytest.fixture
def paintings(tmp_path):
    folder = tmp_path / "paintings"
    write_painting(folder / "yellow stripes.png", colour=(250, 200, 20))
    write_painting(folder / "blue.jpg", colour=(20, 60, 250), period=5)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_one_model_per_painting_then_a_grid(tmp_path, paintings):
    photos = write_photos(tmp_path / "train", 4)
    val = write_photos(tmp_path / "val", 2)
    found = style_grid.find_paintings(paintings)
    assert [p.name for p in found] == ["blue.jpg", "yellow stripes.png"]
    trained, failed = style_grid.train_styles(found, tiny_params(steps=2), tmp_path / "out", photos,
                                              tmp_path / "ckpt")
    assert [t.name for t in trained] == ["blue", "yellow-stripes"] and failed == {}
    for t in trained:
        sidecar = json.loads((t.model_dir / "model.json").read_text())
        assert sidecar["steps"] == 2 and not t.reused and t.seconds == sidecar["seconds"]
        assert (t.model_dir / "loss.tsv").is_file()

    grid = tmp_path / "out" / "grid.png"
    style_grid.render_grid(trained, style_grid.held_out_photos(val, 2), grid)
    with Image.open(grid) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[0] > 3 * 200 and pixels.shape[1] > 3 * 200  # 3 rows x 3 columns of pictures
    assert not list(grid.parent.glob(".grid.*"))  # no temporary file left

    # a second call keeps both models; a changed setting retrains
    again, _ = style_grid.train_styles(found, tiny_params(steps=2), tmp_path / "out", photos, tmp_path / "ckpt")
    assert all(t.reused for t in again)
    changed, _ = style_grid.train_styles(found[:1], tiny_params(steps=3), tmp_path / "out", photos, tmp_path / "ckpt")
    assert not changed[0].reused
    layers, _ = style_grid.train_styles(found[:1], tiny_params(steps=3, style_layers=["stem"]), tmp_path / "out",
                                        photos, tmp_path / "ckpt")
    assert not layers[0].reused
    assert json.loads((changed[0].model_dir / "model.json").read_text())["steps"] == 3


def test_unusable_paintings_are_skipped_with_their_reason(tmp_path, paintings):
    (paintings / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    bomb = Image.new("1", (20000, 20000))  # 400M pixels in a few kB of PNG: over the style-image limit
    bomb.save(paintings / "bomb.png", optimize=True)
    trained, failed = style_grid.train_styles(style_grid.find_paintings(paintings), tiny_params(steps=1),
                                              tmp_path / "out", write_photos(tmp_path / "train", 3), tmp_path / "ckpt")
    assert [t.name for t in trained] == ["blue", "yellow-stripes"]
    assert set(failed) == {str(paintings / "broken.jpg"), str(paintings / "bomb.png")}
    assert "the style-image limit" in failed[str(paintings / "bomb.png")]
    assert not (tmp_path / "out" / "broken").exists() and not (tmp_path / "out" / "bomb").exists()


def test_a_refused_resume_skips_that_painting_and_says_fresh(tmp_path, paintings, monkeypatch):
    import tasks.train as train_mod

    def die_at_2(step):
        if step == 2:
            raise KeyboardInterrupt
    found, photos = style_grid.find_paintings(paintings)[:1], write_photos(tmp_path / "train", 3)
    monkeypatch.setattr(train_mod, "_on_step", die_at_2)
    with pytest.raises(KeyboardInterrupt):
        style_grid.train_styles(found, tiny_params(steps=4, checkpoint_every=1), tmp_path / "out", photos, tmp_path / "ckpt")
    monkeypatch.setattr(train_mod, "_on_step", lambda step: None)
    trained, failed = style_grid.train_styles(found, tiny_params(steps=4, checkpoint_every=1, lr=0.02),
                                              tmp_path / "out", photos, tmp_path / "ckpt")
    assert trained == [] and "lr: 0.01 -> 0.02" in failed[str(found[0])] and "--fresh" in failed[str(found[0])]
    trained, failed = style_grid.train_styles(found, tiny_params(steps=4, checkpoint_every=1, lr=0.02),
                                              tmp_path / "out", photos, tmp_path / "ckpt", fresh=True)
    assert [t.name for t in trained] == ["blue"] and failed == {}


def test_folder_errors(tmp_path):
    with pytest.raises(StageError, match="not a folder"):
        style_grid.find_paintings(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="no images"):
        style_grid.find_paintings(tmp_path / "empty")
    write_painting(tmp_path / "clash" / "a b.png")
    write_painting(tmp_path / "clash" / "a.b.png")
    with pytest.raises(StageError, match="same name: a-b"):
        style_grid.find_paintings(tmp_path / "clash")


def test_cli_accepts_only_train_overrides(tmp_path, capsys):
    assert cli(["styles", str(tmp_path), "--set", "stylize.quality=3"]) == 2
    assert "only train.* settings" in capsys.readouterr().err
    assert cli(["styles", str(tmp_path), "--set", "train.steps=0"]) == 2
    assert "train.steps" in capsys.readouterr().err
