"""AdaIN through the bulk engine (`stylepipe stylize --adain-style`): any painting at run time,
resume, and an identity that holds the paintings' sha256 and the controls."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylepipe.cli import main
from tests.tasks.bulk.test_support import ledger_rows, make_photos, output_files
from tests.tiny_training import write_painting

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def adain_model(tmp_path_factory) -> Path:
    """An adain model folder: the pretrained encoder and a small decoder with a variance-keeping
    random init (its output follows its input, which is all these tests need)."""
    import torch

    from models.adain.network import build_adain
    from models.weights import save_model

    torch.manual_seed(0)
    layers = ["stem", "block5.expand"]
    net = build_adain("efficientnet_lite0", "block5.expand", layers, 240, 8, [16, 8, 8, 8], pretrained=True)
    for m in net.decoder.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    folder = tmp_path_factory.mktemp("models") / "anypainting"
    save_model(folder, net, {"family": "adain", "encoder": "efficientnet_lite0", "layer": "block5.expand",
                             "style_layers": layers, "channels": 240, "stride": 8, "widths": [16, 8, 8, 8]})
    return folder


@pytest.fixture
def src(tmp_path) -> Path:
    make_photos(tmp_path / "src", ["a.jpg", "b.png", "c/d.jpg"])
    return tmp_path / "src"


@pytest.fixture
def paintings(tmp_path) -> tuple[Path, Path]:
    return (write_painting(tmp_path / "p" / "yellow.png", (250, 200, 20), period=3),
            write_painting(tmp_path / "p" / "blue.png", (20, 90, 250), period=5))


def stylize(*args) -> int:
    return main(["stylize", *map(str, args), "--quiet", "--workers", "0", "--format", "png"])


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_any_painting_resumes_and_the_controls_are_its_identity(src, tmp_path, adain_model, paintings, capsys):
    out = tmp_path / "out"
    yellow, blue = paintings
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--out", out) == 0
    assert output_files(out) == ["a.png", "b.png", "c/d.png"]
    assert "stylized 3 inputs" in capsys.readouterr().out
    first = {r["relpath"]: r["model_hash"] for r in ledger_rows(out / ".stylepipe/ledger.sqlite")}
    a_yellow = pixels(out / "a.png")

    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--out", out) == 0
    assert "stylized 0 inputs" in capsys.readouterr().out          # resumed: nothing to redo

    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--alpha", "0.5", "--out", out) == 0
    assert "stylized 3 inputs" in capsys.readouterr().out          # alpha is part of the identity
    half = {r["relpath"]: r["model_hash"] for r in ledger_rows(out / ".stylepipe/ledger.sqlite")}
    assert all(half[k] != first[k] for k in first)
    assert np.abs(pixels(out / "a.png") - a_yellow).max() > 0

    # the painting's content, not its path: the same file name with other pixels redoes everything
    write_painting(yellow, (250, 40, 200), period=3)
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--alpha", "0.5", "--out", out) == 0
    assert "stylized 3 inputs" in capsys.readouterr().out


def test_interpolation_and_mask_end_to_end(src, tmp_path, adain_model, paintings):
    yellow, blue = paintings
    assert stylize(src, "--model", adain_model, "--adain-style", blue, "--out", tmp_path / "blue") == 0
    # all the weight on the second painting: exactly the second painting alone
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--style", f"{blue}:1",
                   "--out", tmp_path / "all-blue") == 0
    assert np.array_equal(pixels(tmp_path / "blue/a.png"), pixels(tmp_path / "all-blue/a.png"))
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--style", f"{blue}:0.5",
                   "--out", tmp_path / "mixed") == 0
    assert not np.array_equal(pixels(tmp_path / "blue/a.png"), pixels(tmp_path / "mixed/a.png"))

    mask = np.zeros((64, 96), np.uint8)
    mask[:, :48] = 255                                              # left: yellow; right: blue
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--style", blue,
                   "--mask", tmp_path / "mask.png", "--out", tmp_path / "masked") == 0
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--out", tmp_path / "yellow") == 0
    masked, y, b = (pixels(tmp_path / f"{d}/a.png") for d in ("masked", "yellow", "blue"))
    # away from the seam each side looks like its own painting's result more than the other's
    left, right = np.s_[:, :32], np.s_[:, 64:]
    assert np.abs(masked[left] - y[left]).mean() < np.abs(masked[left] - b[left]).mean()
    assert np.abs(masked[right] - b[right]).mean() < np.abs(masked[right] - y[right]).mean()


def test_bad_controls_are_refused_and_a_bad_input_is_one_failure(src, tmp_path, adain_model, paintings, capsys):
    yellow, blue = paintings
    out = tmp_path / "out"
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--style", blue, "--out", out) == 2
    assert "PAINTING:WEIGHT" in capsys.readouterr().err
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--style", f"{blue}:1.5", "--out", out) == 2
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--alpha", "2", "--out", out) == 2
    assert stylize(src, "--model", adain_model, "--alpha", "0.5", "--out", out) == 2
    assert stylize(src, "--model", adain_model, "--adain-style", tmp_path / "missing.png", "--out", out) == 1
    assert "missing.png" in capsys.readouterr().err
    (src / "bad.jpg").write_bytes(b"not an image")
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--out", out,
                   "--max-failed-fraction", "0.5") == 0
    rows = {r["relpath"]: r["status"] for r in ledger_rows(out / ".stylepipe/ledger.sqlite")}
    assert rows == {"a.jpg": "done", "b.png": "done", "c/d.jpg": "done", "bad.jpg": "failed"}


def test_controls_survive_the_bulk_flows_json_parameters(paintings, tmp_path):
    """flows/bulk.py ships each ModelSpec as asdict() through Prefect's JSON parameters."""
    import dataclasses
    import json

    from models.adain.params import AdainControls
    from tasks.bulk.plan import ModelSpec, model_hash

    yellow, blue = paintings
    spec = ModelSpec(str(tmp_path), adain=AdainControls(((str(yellow), 0.7), (str(blue), 0.3)), alpha=0.4))
    again = ModelSpec(**json.loads(json.dumps(dataclasses.asdict(spec))))
    assert again == spec and isinstance(again.adain, AdainControls)
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert model_hash(again) == model_hash(spec)
    assert model_hash(dataclasses.replace(spec, adain=dataclasses.replace(spec.adain, alpha=0.5))) != model_hash(spec)


def test_the_network_alone_runs_its_default_painting_untiled(tmp_path, adain_model):
    """`--model` without `--adain-style` (infer@): the stored default painting, never in tiles
    (AdaIN's content statistics are the whole picture's)."""
    import torch

    from tasks.bulk.plan import ModelSpec
    from tasks.bulk.runners import StyleModels

    make_photos(tmp_path / "big", ["wide.png"], size=(300, 80))
    out = tmp_path / "out"
    assert main(["stylize", str(tmp_path / "big"), "--model", str(adain_model), "--out", str(out), "--quiet",
                 "--workers", "0", "--tile-above", "128", "--tile-size", "64", "--tile-overlap", "16"]) == 0
    assert output_files(out) == ["wide.jpg"]
    models = StyleModels([ModelSpec(str(adain_model))], torch.device("cpu"), tile_size=64, tile_overlap=16,
                         tile_above=128, batch_size=1)
    assert not models.needs_tiles(80, 300)


def write_manifest(path: Path, rows: list[tuple[str, object]]) -> Path:
    path.write_text("input,painting\n" + "".join(f"{name},{painting}\n" for name, painting in rows))
    return path


def test_a_manifest_gives_each_input_its_own_painting(src, tmp_path, adain_model, paintings, capsys):
    """--style-manifest: each named input after its own painting, exactly as a job after that one
    painting alone would stylize it (same pixels, same identity); an input the manifest does not
    name, with no --adain-style, is one recorded failure; editing a row redoes that input alone."""
    yellow, blue = paintings
    for name, painting in (("yellow", yellow), ("blue", blue)):
        assert stylize(src, "--model", adain_model, "--adain-style", painting, "--out", tmp_path / name) == 0
    manifest = write_manifest(tmp_path / "p" / "manifest.csv", [("a.jpg", "yellow.png"), ("c/d.jpg", blue)])
    out = tmp_path / "out"
    assert stylize(src, "--model", adain_model, "--style-manifest", manifest, "--out", out,
                   "--max-failed-fraction", "0.5") == 0
    assert output_files(out) == ["a.png", "c/d.png"]
    assert np.array_equal(pixels(out / "a.png"), pixels(tmp_path / "yellow/a.png"))
    assert np.array_equal(pixels(out / "c/d.png"), pixels(tmp_path / "blue/c/d.png"))
    rows = {r["relpath"]: r for r in ledger_rows(out / ".stylepipe/ledger.sqlite")}
    assert rows["b.png"]["status"] == "failed" and rows["b.png"]["reason"].startswith("no-painting:")
    single = {r["relpath"]: r["model_hash"] for r in ledger_rows(tmp_path / "yellow/.stylepipe/ledger.sqlite")}
    assert rows["a.jpg"]["model_hash"] == single["a.jpg"]
    capsys.readouterr()

    assert stylize(src, "--model", adain_model, "--style-manifest", manifest, "--out", out,
                   "--max-failed-fraction", "0.5") == 0
    assert "stylized 0 inputs" in capsys.readouterr().out          # resumed: nothing to redo
    write_manifest(manifest, [("a.jpg", blue), ("c/d.jpg", blue)])
    assert stylize(src, "--model", adain_model, "--style-manifest", manifest, "--adain-style", yellow,
                   "--out", out) == 0
    assert "stylized 2 inputs" in capsys.readouterr().out          # a.jpg (new painting) and b.png (default)
    assert np.array_equal(pixels(out / "a.png"), pixels(tmp_path / "blue/a.png"))
    assert np.array_equal(pixels(out / "b.png"), pixels(tmp_path / "yellow/b.png"))


def test_one_batch_of_inputs_after_different_paintings(tmp_path, adain_model, paintings, monkeypatch):
    """AdaIN's target statistics are per image: a batch whose inputs name different paintings
    (or none: the job's painting) gives each the pixels it gets alone; also when the batch runs in
    several passes (runners.MAX_PASS_PIXELS), each with its own images' paintings."""
    import torch

    import tasks.bulk.runners as runners

    from models.adain.params import AdainControls
    from tasks.bulk.plan import ModelSpec
    from tasks.bulk.runners import AdainModels

    yellow, blue = paintings
    spec = ModelSpec(str(adain_model), adain=AdainControls(((str(yellow), 1.0),), manifest="m.csv"))
    runner = AdainModels([spec], torch.device("cpu"))
    batch = np.random.default_rng(0).integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)
    names = [str(yellow), str(blue), str(blue), str(yellow)]
    together = runner.stylize(batch, paintings=names)[0]
    alone = [runner.stylize(batch[n:n + 1], paintings=[p])[0][0] for n, p in enumerate(names)]
    assert all(np.abs(together[n].astype(int) - alone[n]).max() <= 1 for n in range(4))
    assert np.abs(together[1].astype(int) - runner.stylize(batch[1:2], paintings=[str(yellow)])[0][0]).mean() > 1
    mixed = runner.stylize(batch, paintings=["", str(blue), str(blue), ""])[0]  # "": the job's painting
    assert all(np.abs(mixed[n].astype(int) - together[n]).max() <= 1 for n in range(4))
    monkeypatch.setattr(runners, "MAX_PASS_PIXELS", 3 * 64 * 96)  # passes of 3 and 1 images
    in_passes = runner.stylize(batch, paintings=names)[0]
    assert all(np.abs(in_passes[n].astype(int) - together[n]).max() <= 1 for n in range(4))


def test_a_bad_manifest_stops_the_job_and_a_bad_painting_fails_its_inputs(src, tmp_path, adain_model, paintings,
                                                                         capsys):
    yellow, _ = paintings
    out = tmp_path / "out"
    bad = tmp_path / "bad.csv"
    bad.write_text("photo;painting\na.jpg;x.png\n")
    assert stylize(src, "--model", adain_model, "--style-manifest", bad, "--out", out) == 1
    assert "header" in capsys.readouterr().err and not out.exists()
    write_manifest(bad, [("a.jpg", yellow), ("a.jpg", tmp_path / "other.png")])
    assert stylize(src, "--model", adain_model, "--style-manifest", bad, "--out", out) == 1
    assert "two paintings" in capsys.readouterr().err

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    manifest = write_manifest(tmp_path / "m.csv", [("a.jpg", "broken.png"), ("b.png", "gone.png"),
                                                   ("c/d.jpg", yellow)])
    assert stylize(src, "--model", adain_model, "--style-manifest", manifest, "--out", out,
                   "--max-failed-fraction", "0.9") == 0
    rows = {r["relpath"]: (r["status"], r["reason"]) for r in ledger_rows(out / ".stylepipe/ledger.sqlite")}
    assert rows["c/d.jpg"][0] == "done" and output_files(out) == ["c/d.png"]
    assert rows["a.jpg"][0] == rows["b.png"][0] == "failed"
    assert rows["a.jpg"][1].startswith("no-painting:") and "broken.png" in rows["a.jpg"][1]
    assert "gone.png: no such file" in rows["b.png"][1]


def test_a_painting_is_read_once_by_the_plan_and_once_by_the_runner(src, tmp_path, adain_model, paintings,
                                                                    monkeypatch):
    """The plan hashes (and checks) each painting, the runner reads it once for its statistics:
    the same statistics as the painting loaded on its own, whatever its mode (alpha dropped) or
    EXIF orientation."""
    import builtins
    import collections
    import io
    import os

    import torch

    from models.adain.params import AdainControls
    from tasks.bulk.plan import ModelSpec
    from tasks.bulk.runners import AdainModels
    from tasks.data.datasets import load_style_image

    yellow, blue = paintings
    folder = yellow.parent
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    turned = Image.fromarray(rng.integers(0, 256, (30, 60, 3), dtype=np.uint8))
    exif = turned.getexif()
    exif[0x0112] = 6  # EXIF orientation: turn 90 degrees
    turned.save(folder / "turned.jpg", exif=exif)
    manifest = write_manifest(folder / "m.csv", [("a.jpg", "rgba.png"), ("b.png", blue), ("c/d.jpg", "turned.jpg")])

    opened = collections.Counter()
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).parent == folder:
            opened[Path(file).name] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    assert stylize(src, "--model", adain_model, "--style-manifest", manifest, "--out", tmp_path / "m") == 0
    assert opened == {"m.csv": 1, "rgba.png": 2, "blue.png": 2, "turned.jpg": 2}
    opened.clear()
    assert stylize(src, "--model", adain_model, "--adain-style", yellow, "--out", tmp_path / "y") == 0
    assert opened == {"yellow.png": 2}

    opened.clear()
    spec = ModelSpec(str(adain_model), adain=AdainControls(((str(folder / "rgba.png"), 1.0),), manifest=str(manifest)))
    runner = AdainModels([spec], torch.device("cpu"))
    runner.stylize(np.zeros((1, 64, 64, 3), np.uint8), paintings=[str(folder / "turned.jpg")])
    assert opened == {"rgba.png": 1, "turned.jpg": 1}
    monkeypatch.undo()
    for name, got in (("rgba.png", runner.styles[0][0]), ("turned.jpg", runner.by_painting[str(folder / "turned.jpg")])):
        alone = runner.net.style_of(load_style_image(folder / name, spec.adain.style_size))
        assert all(torch.equal(a, b) for a, b in zip(got, alone)), name
