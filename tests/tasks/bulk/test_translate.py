"""`stylepipe translate`: a small archive translated by pix2pix / cyclegan models through the bulk
engine; a second run resumes (skips what is done); the direction is part of what is made; large
images are tiled; a wrong direction or model is refused with a message that says why."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import registry
from models.family import TrainInputs
from models.weights import load_model, save_model
from stylepipe.cli import main
from tasks.bulk.engine import stylize
from tasks.bulk.lean import LeanModels, lean_models
from tasks.bulk.plan import ModelSpec
from tests.tasks.bulk.test_support import encoded, ledger_rows, make_job, output_files, photo, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"pix2pix": {"ngf": 4, "ndf": 4, "num_downs": 4}, "cyclegan": {"ngf": 4, "ndf": 4, "n_blocks": 1}}


def random_translator(folder, family: str):
    tp = registry.validate_params(family, TINY[family], {})[0]
    torch.manual_seed(0)
    trainer = registry.load(family).make_trainer(tp, TrainInputs(torch.device("cpu")))
    net = trainer.inference_network().eval()
    save_model(folder, net, {"family": family, "train": tp.model_dump(), **trainer.sidecar()})
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("translators")
    return {f: random_translator(root / f, f) for f in TINY}


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(5):
            z.writestr(f"set/{i}.png", encoded(photo(40 + 8 * i, 36, seed=i), "PNG"))
        z.writestr("set/bad.png", b"not an image")
    return path


def translate(*args) -> int:
    return main(["translate", *map(str, args), "--quiet", "--workers", "0"])


def test_archive_translated_and_resumed(archive, models, tmp_path, capsys):
    out = tmp_path / "out"
    assert translate(archive, "--model", models["cyclegan"], "--out", out, "--limit", "3",
                     "--max-failed-fraction", "0.5") == 0
    first = output_files(out)
    assert len(first) == 3 and "translated 3 inputs" in capsys.readouterr().out
    mtimes = {f: (out / f).stat().st_mtime_ns for f in first}
    assert translate(archive, "--model", models["cyclegan"], "--out", out, "--max-failed-fraction", "0.5") == 0
    printed = capsys.readouterr().out
    assert "translated 3 inputs" in printed and "1 failed" in printed   # 2 images + the bad one; 3 skipped
    assert output_files(out) == [f"set/{i}.png" for i in range(5)]
    assert all((out / f).stat().st_mtime_ns == t for f, t in mtimes.items())  # done ones not redone
    assert translate(archive, "--model", models["cyclegan"], "--out", out, "--max-failed-fraction", "0.5") == 0
    assert "translated 0 inputs" in capsys.readouterr().out

    # the outputs are the network's, at the input's size, in the direction asked for
    net = load_model(models["cyclegan"])[0].set_direction("a2b")
    with zipfile.ZipFile(archive) as z:
        x = np.array(Image.open(z.open("set/2.png")).convert("RGB"))
    with torch.no_grad():
        expected = net(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255)[0]
    got = torch.from_numpy(np.array(Image.open(out / "set/2.png"))).permute(2, 0, 1).float() / 255
    assert got.shape == expected.shape == (3, 36, 56)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6

    back = tmp_path / "back"
    assert translate(archive, "--model", models["cyclegan"], "--out", back, "--direction", "b2a",
                     "--max-failed-fraction", "0.5") == 0
    assert not np.array_equal(np.asarray(Image.open(back / "set/2.png")), np.asarray(Image.open(out / "set/2.png")))


def test_large_images_are_tiled(tmp_path, models):
    src = tmp_path / "src"
    src.mkdir()
    photo(150, 100, seed=3).save(src / "big.png")
    for family in TINY:
        out = tmp_path / family
        assert translate(src, "--model", models[family], "--out", out, "--tile-above", "64", "--tile-size", "64",
                         "--tile-overlap", "16") == 0
        with Image.open(out / "big.png") as im:
            assert im.size == (150, 100)


def test_refusals_say_why(tmp_path, models, capsys):
    src = tmp_path / "src"
    src.mkdir()
    photo(40, 40, seed=0).save(src / "a.png")
    assert translate(src, "--model", models["pix2pix"], "--out", tmp_path / "o", "--direction", "b2a") == 2
    assert "translates a2b only" in capsys.readouterr().err


@pytest.mark.parametrize("family,direction", [("pix2pix", "a2b"), ("cyclegan", "b2a")])
def test_infer_stage_translates_the_held_out_input_domain(tmp_path, models, monkeypatch, family, direction):
    import shutil

    from stylepipe.config import validate
    from tasks import infer as stage
    from tests.tiny_training import write_pairs

    kind = "paired" if family == "pix2pix" else "unpaired"
    params = validate({"datasets": {"d": {"kind": kind, "sources": [{"url": "x"}]}},
                       "models": {"m": {"family": family, "dataset": "d", "train": TINY[family],
                                        "infer": {"direction": direction}}}})
    shutil.copytree(models[family], tmp_path / "data/models/m")
    write_pairs(tmp_path / "data/processed/d/val", 3)
    monkeypatch.chdir(tmp_path)
    summary = stage.run_stage("m", params)
    assert summary.done == 3
    names = sorted(p.name for p in (tmp_path / "data/processed/d/val/A").glob("*.png"))
    assert sorted(p.name for p in (tmp_path / "data/infer/m").iterdir()) == names
    net = load_model(tmp_path / "data/models/m")[0].set_direction(direction)
    source = tmp_path / "data/processed/d/val" / ("A" if direction == "a2b" else "B") / names[0]
    x = torch.from_numpy(np.array(Image.open(source))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = net(x)[0]
    got = torch.from_numpy(np.array(Image.open(tmp_path / "data/infer/m" / names[0]))).permute(2, 0, 1).float() / 255
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("family,direction", [("pix2pix", "a2b"), ("cyclegan", "a2b"), ("cyclegan", "b2a")])
def test_onnx_export_and_backend_match_pytorch_in_each_direction(family, direction, tmp_path, monkeypatch, tiny_model):
    """A translation model exports one direction's generator (models/export.py); onnxruntime gives
    PyTorch's translation at sides that are not multiples of its stride, and a bulk job on
    --backend onnxruntime writes what the torch backend writes, within 1/255."""
    import onnxruntime as ort

    from models.export import export_onnx

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = random_translator(tmp_path / family, family)
    net, sidecar = load_model(model)
    with torch.no_grad():  # the papers' N(0, 0.02) init leaves the output flat at 0.5: spread it
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.mul_(10)
    save_model(model, net, sidecar)
    models = {family: model}
    path = export_onnx(models[family], tmp_path / f"{family}-{direction}.onnx", direction=direction)
    net = net.set_direction(direction).eval()
    x = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4 and expected.std() > 0.01

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(encoded(photo(30 + 9 * i, 41, seed=i), "PNG"))
    (src / "big.png").write_bytes(encoded(photo(150, 100, seed=3), "PNG"))  # tiled, on either backend
    outs = {}
    for backend in ("torch", "onnxruntime", "openvino"):  # (openvino's job: the export onnxruntime's made)
        outs[backend] = tmp_path / backend
        assert translate(src, "--model", models[family], "--direction", direction, "--backend", backend,
                         "--out", outs[backend], "--tile-above", "64", "--tile-size", "64", "--tile-overlap", "16") == 0
    names = output_files(outs["torch"])
    for runtime in ("onnxruntime", "openvino"):
        assert names == output_files(outs[runtime]) and len(names) == 4
        worst = max(int(np.abs(np.asarray(Image.open(outs["torch"] / n), np.int16)
                               - np.asarray(Image.open(outs[runtime] / n), np.int16)).max()) for n in names)
        assert worst <= 1, runtime
    assert (tmp_path / "cache/stylepipe/onnx").is_dir()  # the job made its own export, one per direction
    from tasks.bulk.backends import EXACT_ONNX_RUNTIMES, EXPORT_REVISION

    made = {p.name.split("-", 1)[1] for p in (tmp_path / "cache/stylepipe/onnx").iterdir()}
    r = f"r{EXPORT_REVISION}-{direction}"
    # the network, and its tiles' graph; the norm statistics' graph only where it has instance norms
    instance_norms = any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
    assert made == {f"{r}.onnx", f"{r}-tiles.onnx"} | ({f"{r}-norm-statistics.onnx"} if instance_norms else set())
    assert instance_norms == (family == "cyclegan")

    # Once exported, a later job runs on the lean runner (tasks/bulk/lean.py): in a fresh process,
    # without importing PyTorch, in the same direction, writing what the torch backend writes.
    lean = tmp_path / "lean"
    args = ["translate", str(src), "--model", str(models[family]), "--direction", direction, "--backend",
            "onnxruntime", "--out", str(lean), "--tile-above", "64", "--tile-size", "64", "--tile-overlap", "16",
            "--workers", "0", "--quiet"]
    code = f"import sys; from stylepipe.cli import main; rc = main({args!r}); print(rc, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[3], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr[-2000:]
    assert output_files(lean) == names
    assert max(int(np.abs(np.asarray(Image.open(outs["torch"] / n), np.int16)
                          - np.asarray(Image.open(lean / n), np.int16)).max()) for n in names) <= 1
    rows = ledger_rows(lean / ".stylepipe/ledger.sqlite")
    assert len(rows) == 4 and all(row["device"].endswith(f"onnxruntime), translating {direction}") for row in rows)

    # auto takes the lean runner once it remembers choosing onnxruntime or openvino for this model and direction;
    # a job of a translator and a style network never does (the torch path refuses it)
    spec = ModelSpec(str(models[family]), direction=direction)
    auto = make_job(src, tmp_path / "auto", spec, backend="auto")
    assert lean_models(auto) is None
    assert stylize(auto, progress=False).done == 4
    chosen = json.loads((tmp_path / "cache/stylepipe/backends.json").read_text())
    assert isinstance(lean_models(auto), LeanModels) == (next(iter(chosen.values()))["backend"] in EXACT_ONNX_RUNTIMES)
    stylize(make_job(src, tmp_path / "style", tiny_model, backend="onnxruntime"), progress=False)  # its export
    assert lean_models(make_job(src, tmp_path / "style-again", tiny_model, backend="onnxruntime")) is not None
    assert lean_models(make_job(src, tmp_path / "mixed", spec, tiny_model, backend="onnxruntime")) is None
