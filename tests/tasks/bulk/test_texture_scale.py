"""The texture scale at inference (StylizeParams.texture_scale, work_size): the network sees the
image smaller and its result is resized back, so its texture comes out larger; 1 is today's output."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from stylepipe.cli import main
from stylepipe.config import StylizeParams
from stylepipe.errors import StageError
from tasks.bulk.engine import stylize
from tasks.bulk.plan import ModelSpec, options_hash, output_options
from tests.tasks.bulk.test_adain import adain_model  # noqa: F401
from tests.tasks.bulk.test_support import make_job, make_photos, photo, tiny_model  # noqa: F401
from tests.tasks.bulk.test_windows import generator  # noqa: F401
from tests.tiny_training import tiny_params, write_painting, write_photos

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A johnson network trained for a few steps on a striped painting: it paints a texture."""
    import tasks.train as train_mod

    root = tmp_path_factory.mktemp("trained")
    write_photos(root / "photos" / "train", 4)
    write_painting(root / "raw" / "files" / "src-0123abcd" / "paint.jpg", period=2)
    params = tiny_params(steps=30, log_every=10, checkpoint_every=100, upsample="nearest")
    train_mod.train(params, "tiny", train_mod.Paths(data=root / "photos", inputs=root / "raw", model_dir=root / "model",
                                                    log=root / "log.tsv", checkpoints=root / "ckpt"))
    return root / "model"


@pytest.fixture
def src(tmp_path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    photo(160, 120, seed=5).save(folder / "p.png")
    return folder


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.float32)


def high_frequency_share(img: np.ndarray) -> float:
    """The share of the luma's (non-DC) spectral power above 1/4 cycle per pixel, along either axis."""
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(grey.shape[0]), np.fft.fftfreq(grey.shape[1]), indexing="ij")
    return float(power[np.maximum(abs(fy), abs(fx)) > 0.25].sum() / power.sum())


def test_the_default_is_the_networks_output_unchanged(src, tmp_path, trained):
    import torch

    from models.weights import load_model

    stylize(make_job(src, tmp_path / "out", trained, format="png"), progress=False)
    net, _ = load_model(trained)
    with torch.inference_mode():
        x = torch.from_numpy(pixels(src / "p.png")).permute(2, 0, 1)[None] / 255
        y = (net(x) * 255 + 0.5).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(pixels(tmp_path / "out/p.png"), y)
    # unset, the options (and so the ledger identity of every earlier job) are what they were
    assert output_options(StylizeParams(), ModelSpec(str(trained))).keys().isdisjoint({"texture_scale", "work_size"})


def test_a_larger_scale_paints_a_coarser_texture_at_the_same_size(src, tmp_path, trained):
    for scale in (1, 2):
        stylize(make_job(src, tmp_path / f"s{scale}", trained, format="png", texture_scale=scale), progress=False)
    one, two = pixels(tmp_path / "s1/p.png"), pixels(tmp_path / "s2/p.png")
    assert one.shape == two.shape == (120, 160, 3)
    assert np.abs(one - two).mean() > 5
    hf_one, hf_two = high_frequency_share(one), high_frequency_share(two)
    assert hf_two < 0.5 * hf_one, (hf_one, hf_two)
    # work_size: the long side the network sees; 80 on a 160-px image is a texture scale of 2
    stylize(make_job(src, tmp_path / "w80", trained, format="png", work_size=80), progress=False)
    assert np.array_equal(pixels(tmp_path / "w80/p.png"), two)


def test_preserve_colors_and_strength_act_at_the_output_size(src, tmp_path, trained):
    spec = ModelSpec(str(trained), strength=0.0)
    stylize(make_job(src, tmp_path / "zero", spec, format="png", texture_scale=4), progress=False)
    assert np.abs(pixels(tmp_path / "zero/p.png") - pixels(src / "p.png")).max() <= 1  # the photo, not a blur of it


def test_large_images_scale_outside_the_tiles(tmp_path, trained):
    """Above tile_above the image is scaled first; the network's image is tiled if it is still above."""
    folder = tmp_path / "big"
    make_photos(folder, ["wide.png"], size=(400, 120))
    Image.open(folder / "wide.png").resize((200, 60), Image.Resampling.BICUBIC).save(folder / "half.png")
    tiles = {"tile_above": 128, "tile_size": 64, "tile_overlap": 16}
    whole = {"tile_above": 4096}

    def run(name: str, **settings) -> dict[str, np.ndarray]:
        stylize(make_job(folder, tmp_path / name, trained, format="png", **settings), progress=False)
        return {n: pixels(tmp_path / name / f"{n}.png") for n in ("wide", "half")}

    tiled, untiled = run("tiled", **tiles), run("whole", **whole)
    tiled2, untiled2 = run("tiled2", **tiles, texture_scale=2), run("whole2", **whole, texture_scale=2)
    # scale 2: the network's 200x60 image is still above tile_above, so it is tiled, and differs from
    # the untiled result by what tiling the 200x60 image does at scale 1, no more
    assert tiled2["wide"].shape == (120, 400, 3)
    tiling = np.abs(tiled["half"] - untiled["half"]).mean()
    assert np.abs(tiled2["wide"] - untiled2["wide"]).mean() <= 1.1 * tiling + 0.5
    assert np.abs(tiled2["wide"] - tiled["wide"]).mean() > 5
    # scale 4: 100x30, below tile_above: one piece, as without tiles
    assert np.array_equal(run("tiled4", **tiles, texture_scale=4)["wide"], run("whole4", **whole, texture_scale=4)["wide"])


def test_an_image_enlarged_past_tile_above_is_tiled(tmp_path, trained):
    """A small image that the scale enlarges past tile_above runs in tiles (memory stays bounded),
    and comes out as the untiled run does, within what tiling costs."""
    from tasks.bulk.runners import StyleModels

    import torch

    folder, enlarged = tmp_path / "small", tmp_path / "enlarged"
    make_photos(folder, ["p.png"], size=(100, 30))
    enlarged.mkdir()
    Image.open(folder / "p.png").resize((200, 60), Image.Resampling.BICUBIC).save(enlarged / "p.png")
    tiles = {"tile_above": 128, "tile_size": 64, "tile_overlap": 16}
    specs = [ModelSpec(path=str(trained))]
    assert StyleModels(specs, torch.device("cpu"), batch_size=1, **tiles, work_size=200).needs_tiles(30, 100)
    assert not StyleModels(specs, torch.device("cpu"), batch_size=1, **tiles).needs_tiles(30, 100)

    def run(src: Path, name: str, **settings) -> np.ndarray:
        stylize(make_job(src, tmp_path / name, trained, format="png", **settings), progress=False)
        return pixels(tmp_path / name / "p.png")

    tiled, whole = run(folder, "tiled", work_size=200, **tiles), run(folder, "whole", work_size=200, tile_above=4096)
    assert tiled.shape == (30, 100, 3)
    # tiles differ from one pass by what tiling the 200x60 image costs at scale 1, no more
    tiling = np.abs(run(enlarged, "tiled1", **tiles) - run(enlarged, "whole1", tile_above=4096)).mean()
    assert 0 < np.abs(tiled - whole).mean() <= 1.1 * tiling + 0.5


def test_the_scale_is_part_of_the_outputs_identity(src, tmp_path, tiny_model):
    out = tmp_path / "out"
    assert stylize(make_job(src, out, tiny_model), progress=False).run.processed == 1
    assert stylize(make_job(src, out, tiny_model, texture_scale=1.0), progress=False).run.processed == 0
    assert stylize(make_job(src, out, tiny_model, texture_scale=2), progress=False).run.processed == 1
    assert stylize(make_job(src, out, tiny_model, texture_scale=2.0), progress=False).run.processed == 0
    assert stylize(make_job(src, out, tiny_model, texture_scale=2, work_size=512), progress=False).run.processed == 1
    spec = ModelSpec(str(tiny_model))
    hashes = {options_hash(output_options(StylizeParams(**p), spec))
              for p in ({}, {"texture_scale": 1.5}, {"texture_scale": 3}, {"work_size": 512})}
    assert len(hashes) == 4


def test_onnx_jobs_with_a_scale_take_the_torch_path(src, tmp_path, tiny_model):
    from tasks.bulk.lean import LeanModels, lean_models

    stylize(make_job(src, tmp_path / "export", tiny_model, backend="onnxruntime"), progress=False)  # caches the export
    assert isinstance(lean_models(make_job(src, tmp_path / "a", tiny_model, backend="onnxruntime",
                                           device="cpu")), LeanModels)
    onnx = make_job(src, tmp_path / "onnx", tiny_model, backend="onnxruntime", device="cpu", format="png",
                    texture_scale=2)
    assert lean_models(onnx) is None
    stylize(onnx, progress=False)
    stylize(make_job(src, tmp_path / "torch", tiny_model, format="png", texture_scale=2), progress=False)
    assert np.abs(pixels(tmp_path / "onnx/p.png") - pixels(tmp_path / "torch/p.png")).max() <= 1


def test_adain_takes_the_scale_too(src, tmp_path, adain_model):
    from models.adain.params import AdainControls

    painting = write_painting(tmp_path / "yellow.png", period=3)
    runs = {}
    for scale in (1, 2):
        spec = ModelSpec(str(adain_model), adain=AdainControls(paintings=((str(painting), 1.0),)))
        stylize(make_job(src, tmp_path / f"a{scale}", spec, format="png", texture_scale=scale), progress=False)
        runs[scale] = pixels(tmp_path / f"a{scale}/p.png")
    assert runs[1].shape == runs[2].shape == (120, 160, 3)
    assert high_frequency_share(runs[2]) < 0.5 * high_frequency_share(runs[1])


@pytest.mark.parametrize("scale", [{"texture_scale": 2.0}, {"work_size": 256}])
def test_gatys_and_generators_refuse_a_scale(tmp_path, generator, scale):
    import torch

    from models.gatys.optimize import GatysConfig
    from tasks.bulk.runners import build_models

    photo(32, 32).save(tmp_path / "painting.png")
    for spec in (ModelSpec(str(tmp_path / "painting.png"), gatys=GatysConfig(sizes=(16,), steps=1)),
                 ModelSpec(str(generator))):
        with pytest.raises(StageError, match="texture scale"):
            build_models([spec], torch.device("cpu"), **scale)


@pytest.mark.parametrize("bad", [{"texture_scale": 0}, {"texture_scale": -1}, {"texture_scale": 0.1},
                                 {"texture_scale": 100}, {"texture_scale": float("nan")}, {"work_size": 0},
                                 {"work_size": 10}])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValidationError):
        StylizeParams(**bad)


def test_the_cli_flags(src, tmp_path, tiny_model, capsys):
    def run(*extra):
        return main(["stylize", str(src), "--model", str(tiny_model), "--out", str(tmp_path / "out"),
                     "--quiet", "--workers", "0", "--format", "png", *extra])

    assert run("--texture-scale", "0") == 2
    assert "--texture-scale" in capsys.readouterr().err
    assert run("--work-size", "5") == 2
    assert "--work-size" in capsys.readouterr().err
    assert main(["stylize", str(src), "--gatys-style", str(src / "p.png"), "--out", str(tmp_path / "g"),
                 "--texture-scale", "2", "--quiet"]) == 2
    assert "not --gatys-style" in capsys.readouterr().err
    assert run("--texture-scale", "2") == 0
    assert Image.open(tmp_path / "out/p.png").size == (160, 120)
