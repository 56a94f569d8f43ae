"""tasks/tools/style_grid.py: one model per painting in a folder, a grid of results, reuse of finished
models. Tiny images and a few steps; the real run is `stylepipe styles` (README)."""
import json

import numpy as np
import pytest
from PIL import Image

from stylepipe.cli import main as cli
from stylepipe.config import load_params
from stylepipe.errors import StageError
from tasks.tools import style_grid
from tests.conftest import REPO_ROOT
from tests.tiny_training import tiny_params, write_painting, write_photos


def photo_dataset(root, train: int, val: int = 0):
    """data/processed/<dataset> as preprocess leaves it: train/ and val/ photos."""
    write_photos(root / "train", train)
    if val:
        write_photos(root / "val", val)
    return root


@pytest.fixture
def paintings(tmp_path):
    folder = tmp_path / "paintings"
    write_painting(folder / "yellow stripes.png", colour=(250, 200, 20))
    write_painting(folder / "blue.jpg", colour=(20, 60, 250), period=5)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_one_model_per_painting_then_a_grid(tmp_path, paintings):
    photos = photo_dataset(tmp_path / "photos", train=4, val=2)
    val = photos / "val"
    found = style_grid.find_paintings(paintings)
    assert [p.name for p in found] == ["blue.jpg", "yellow stripes.png"]
    trained, failed = style_grid.train_styles(found, tiny_params(steps=2), tmp_path / "out", photos,
                                              tmp_path / "ckpt")
    assert [t.name for t in trained] == ["blue", "yellow-stripes"] and failed == {}
    for t in trained:
        sidecar = json.loads((t.model_dir / "model.json").read_text())
        assert sidecar["steps"] == 2 and not t.reused and t.seconds == sidecar["seconds"]
        assert sidecar["family"] == "johnson" and sidecar["style"] == t.name and sidecar["dataset"] == "photos"
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
                                              tmp_path / "out", photo_dataset(tmp_path / "photos", 3), tmp_path / "ckpt")
    assert [t.name for t in trained] == ["blue", "yellow-stripes"]
    assert set(failed) == {str(paintings / "broken.jpg"), str(paintings / "bomb.png")}
    assert "the style-image limit" in failed[str(paintings / "bomb.png")]
    assert not (tmp_path / "out" / "broken").exists() and not (tmp_path / "out" / "bomb").exists()


def test_a_refused_resume_skips_that_painting_and_says_fresh(tmp_path, paintings, monkeypatch):
    import tasks.train as train_mod

    def die_at_2(step):
        if step == 2:
            raise KeyboardInterrupt
    found, photos = style_grid.find_paintings(paintings)[:1], photo_dataset(tmp_path / "photos", 3)
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


def test_template_is_the_first_johnson_model():
    params = tiny_params()
    assert style_grid.template_model(params) == ("tiny", params.model("tiny"))
    cgan_only = params.model_copy(update={"models": {"digits": params.model("tiny").model_copy(
        update={"family": "cgan"})}})
    with pytest.raises(StageError, match="no johnson model"):
        style_grid.template_model(cgan_only)


def test_cli_accepts_only_train_overrides(tmp_path, capsys):
    template, _ = style_grid.template_model(load_params(REPO_ROOT / "params.yaml"))
    repo = ["--repo", str(REPO_ROOT)]
    assert cli(["styles", str(tmp_path), *repo, "--set", "stylize.quality=3"]) == 2
    assert "only train.* settings" in capsys.readouterr().err
    assert cli(["styles", str(tmp_path), *repo, "--set", "train.steps=-1"]) == 2
    assert f"models.{template}.train.steps" in capsys.readouterr().err


def test_cli_train_overrides_apply_to_the_template_model(tmp_path, monkeypatch):
    before = load_params(REPO_ROOT / "params.yaml")
    template, _ = style_grid.template_model(before)
    seen = {}

    def fake_run(folder, params, out, **kwargs):
        seen["params"] = params
        return {"styles": [], "grid": str(out / "grid.png"), "failed": {}}
    monkeypatch.setattr(style_grid, "run", fake_run)
    assert cli(["styles", str(tmp_path), "--repo", str(REPO_ROOT), "--set", "train.steps=7",
                "--set", "train.lr=0.5"]) == 0
    after = seen["params"]
    assert (after.model(template).train.steps, after.model(template).train.lr) == (7, 0.5)
    for name, m in before.models.items():  # the others untouched
        if name != template:
            assert after.model(name) == m
    assert load_params(REPO_ROOT / "params.yaml") == before  # params.yaml itself is not edited


def test_a_recipe_set_on_the_cli_reaches_the_template_model(tmp_path, monkeypatch):
    """params.yaml's template writes none of the forms recipe's keys itself, so `--set
    train.recipe=forms` trains with all of them (a key written there would win over the recipe)."""
    from models.johnson.params import RECIPES

    template, _ = style_grid.template_model(load_params(REPO_ROOT / "params.yaml"))
    seen = {}

    def fake_run(folder, params, out, **kwargs):
        seen["params"] = params
        return {"styles": [], "grid": str(out / "grid.png"), "failed": {}}
    monkeypatch.setattr(style_grid, "run", fake_run)
    assert cli(["styles", str(tmp_path), "--repo", str(REPO_ROOT), "--set", "train.recipe=forms"]) == 0
    train = seen["params"].model(template).train
    assert {key: getattr(train, key) for key in RECIPES["forms"]} == RECIPES["forms"]
