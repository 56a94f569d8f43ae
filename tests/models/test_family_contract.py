"""The family contract (models/family.py), for every family in models/registry.py: build it, train
a few steps on tiny data, kill and resume (bit-identical weights on CPU), save, reload, run.
Adding a family to the registry adds it here; passing this is what "a family" means."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import tasks.train as train_mod
from models import registry
from models.weights import load_model
from stylepipe.config import validate
from tasks.data.datasets import LABELLED_FILES
from tests.tiny_training import write_pairs, write_painting, write_paintings, write_photos

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Per family: the smallest settings that still exercise its whole step.
TINY = {
    "johnson": {"network": "fast", "image_size": 32, "style_size": 48, "batch_size": 2, "lr": 0.01},
    "gatys": {"painting_size": 40},
    "adain": {"styles": "s", "image_size": 32, "style_size": 32, "batch_size": 2, "widths": [16, 8, 8]},
    # R1 on every other D step, a decaying learning rate, top-k and a categorical latent code: all
    # must resume bit-exactly, and the code must survive the reload
    "dcgan": {"batch_size": 8, "ngf": 8, "ndf": 8, "nz": 8, "preview_every": 2, "r1_gamma": 1.0, "r1_every": 2,
              "decay_fraction": 0.5, "g_topk": 0.5, "latent_categories": 3},
    "cgan": {"batch_size": 8, "ngf": 8, "ndf": 8, "nz": 8, "emb_dim": 4, "preview_every": 2},
    "vae": {"batch_size": 8, "zdim": 4, "width": 8, "hidden": 16, "kl_warmup_steps": 3, "preview_every": 2},
    # 64 px and 6 levels: the U-Net's dropout block (randomness a resume must reproduce) exists;
    # feature matching on
    "pix2pix": {"batch_size": 2, "image_size": 64, "num_downs": 6, "ngf": 4, "ndf": 4, "decay_fraction": 0.5,
                "fm_weight": 10.0},
    # a pool smaller than the fakes made: it fills up and its random swaps run before the kill;
    # residual generators (their zero-initialised last conv must survive save and reload)
    "cyclegan": {"batch_size": 2, "image_size": 16, "ngf": 4, "ndf": 4, "n_blocks": 1, "d_layers": 2,
                 "pool_size": 3, "decay_fraction": 0.5, "residual": True},
}
STEPS = {"gatys": 0}


def write_labelled(folder: Path, count: int = 40, classes: int = 10) -> Path:
    """A labelled dataset in preprocess's format: bars whose position is the class."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % classes
    images = rng.integers(0, 40, (count, 28, 28, 1), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, :, 2 * y + 4: 2 * y + 8] = 230
    folder.mkdir(parents=True, exist_ok=True)
    for name in LABELLED_FILES.values():
        save_file({"images": images, "labels": labels.astype(np.int64)}, str(folder / name))
    return folder


def setup(family: str, tmp: Path):
    info = registry.info(family)
    steps = STEPS.get(family, 6)
    model = {"family": family, "dataset": "d",
             "train": {**TINY[family], "steps": steps, "checkpoint_every": 3, "log_every": 2}}
    if info.needs_style:
        model["style"] = {"url": "painting.png"}
        write_painting(tmp / "inputs" / "files" / "src" / "painting.png")
    data = tmp / "data"
    if info.data == "photos":
        write_photos(data / "train", 4)
        write_photos(data / "val", 2)
    elif info.data in ("paired", "unpaired"):
        write_pairs(data / "train", 5)
    else:
        write_labelled(data)
    datasets = {"d": {"kind": info.data, "sources": [{"url": "x"}]}}
    if "styles" in TINY[family]:  # a second dataset, of paintings (adain): a sibling of data/
        datasets["s"] = {"kind": "photos", "sources": [{"url": "y"}]}
        write_paintings(tmp / "s")
    params = validate({"datasets": datasets, "models": {"m": model}})
    return params


def paths(tmp: Path, run: str) -> train_mod.Paths:
    return train_mod.Paths(tmp / "data", tmp / "inputs", tmp / run / "model", tmp / run / "log.tsv", tmp / run / "ckpt")


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


class Killed(Exception):
    pass


@pytest.mark.parametrize("family", sorted(registry.FAMILIES))
def test_family_contract(family, tmp_path, monkeypatch):
    params = setup(family, tmp_path)
    steps = params.models["m"].train.steps

    straight = train_mod.train(params, "m", paths(tmp_path, "straight"))

    if steps:  # killed after step 4 (a checkpoint at 3), then resumed to the end
        def kill_at(step):
            if step == 4:
                raise Killed
        monkeypatch.setattr(train_mod, "_on_step", kill_at)
        with pytest.raises(Killed):
            train_mod.train(params, "m", paths(tmp_path, "resumed"))
        assert (tmp_path / "resumed" / "ckpt" / train_mod.CHECKPOINT_FILE).is_file()
        monkeypatch.setattr(train_mod, "_on_step", lambda step: None)
    resumed = train_mod.train(params, "m", paths(tmp_path, "resumed"))

    a, b = weights(tmp_path / "straight" / "model"), weights(tmp_path / "resumed" / "model")
    assert a.keys() == b.keys() and a, "the saved network has weights"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{family}: {k} differs after kill + resume"
    assert straight["final_losses"] == resumed["final_losses"]
    assert straight["family"] == family
    log_rows = (tmp_path / "resumed" / "log.tsv").read_text().splitlines()
    assert len(log_rows) == 1 + steps // 2  # header + one row per log_every, none repeated

    net, sidecar = load_model(tmp_path / "straight" / "model")
    assert sidecar == json.loads((tmp_path / "straight" / "model" / "model.json").read_text())
    info = registry.info(family)
    if info.runner == "image":
        if family == "gatys":  # each image is optimised: a few steps at its own size are enough here
            from models.gatys.optimize import GatysConfig
            net.config = GatysConfig(sizes=(28,), steps=3)
        photo = torch.rand(1, 3, 20, 28)
        with torch.no_grad():
            out = net(photo)
        assert out.shape[:2] == (1, 3) and out.min() >= 0 and out.max() <= 1
    else:
        labels = [3, 1, 4] if sidecar["conditional"] else None
        together = net.sample([7, 8, 9], labels)
        alone = net.sample([8], labels[1:2] if labels else None)
        assert together.shape == (3, 1, 28, 28) and 0 <= together.min() and together.max() <= 1
        torch.testing.assert_close(together[1:2], alone)  # a sample depends on its seed, not its batch
        assert not torch.equal(together[0], together[2])
        previews = sorted((tmp_path / "straight" / "model" / "previews").glob("*.png"))
        assert [p.name for p in previews] == [f"step-{s:07d}.png" for s in (2, 4, 6)]


def with_train(params, **changes):
    raw = params.model_dump()
    raw["models"]["m"]["train"].update(changes)
    return validate(raw)


@pytest.mark.parametrize("family", ["johnson", "dcgan"])
def test_speed_options_keep_the_model(family, tmp_path):
    """channels_last and bf16 are the loop's, for every family: NHWC changes the layout, not the
    computation (the first step's losses, on the initial weights, agree to float tolerance; later
    steps drift apart, as Adam turns tiny gradient differences into lr-sized steps); bf16 autocast
    changes the numbers a little."""
    params = with_train(setup(family, tmp_path), steps=1, log_every=1)
    plain = train_mod.train(params, "m", paths(tmp_path, "fp32"))
    nhwc = train_mod.train(with_train(params, channels_last=True), "m", paths(tmp_path, "nhwc"))
    bf16 = train_mod.train(with_train(params, precision="bf16"), "m", paths(tmp_path, "bf16"))
    for k, v in plain["final_losses"].items():
        assert nhwc["final_losses"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
        assert bf16["final_losses"][k] == pytest.approx(v, rel=0.1, abs=0.05), k
    assert bf16["final_losses"] != plain["final_losses"], "bf16 autocast changed nothing"
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "bf16" / "model").values())
    assert bf16["train"]["precision"] == "bf16" and "channels_last" not in nhwc["train"]


def test_compile_trains_the_same_network(tmp_path):
    params = with_train(setup("dcgan", tmp_path), steps=1, log_every=1, r1_gamma=0.0)  # R1 runs uncompiled
    eager = train_mod.train(params, "m", paths(tmp_path, "eager"))
    compiled = train_mod.train(with_train(params, compile=True), "m", paths(tmp_path, "compiled"))
    assert weights(tmp_path / "eager" / "model").keys() == weights(tmp_path / "compiled" / "model").keys()
    for k, v in eager["final_losses"].items():  # compiled in place: same keys, same computation
        assert compiled["final_losses"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
