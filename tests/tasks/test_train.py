"""tasks/train.py on tiny configs (32-px crops, a handful of steps): seconds, not minutes."""
import json
from pathlib import Path

import pytest
import torch

import tasks.train as train_mod
from models.weights import load_model
from stylepipe.config import ConfigError
from stylepipe.errors import StageError
from tasks.data.datasets import StepSamples, find_style_image, load_style_image
from tests.hostile.fixtures import sandbox, server  # noqa: F401 (fixtures)
from tests.tiny_training import tiny_params, write_painting, write_photos

make_params = tiny_params


@pytest.fixture
def data(tmp_path):
    """(data/processed/<dataset>, data/raw/models/<model>) as preprocess and download leave them."""
    data_dir = tmp_path / "processed" / "photos"
    write_photos(data_dir / "train", 4)
    style_dir = tmp_path / "raw" / "models" / "tiny"
    write_painting(style_dir / "files" / "src-0123abcd" / "paint.jpg")
    return data_dir, style_dir


def paths(data, tmp_path, name="run") -> train_mod.Paths:
    data_dir, style_dir = data
    out = tmp_path / name
    return train_mod.Paths(data=data_dir, inputs=style_dir, model_dir=out / "model", log=out / "log.tsv",
                           checkpoints=tmp_path / "ckpt")


def run(params, data, tmp_path, name="run"):
    sidecar = train_mod.train(params, "tiny", paths(data, tmp_path, name))
    return sidecar, tmp_path / name


def read_log(path: Path):
    lines = path.read_text().splitlines()
    assert lines[0] == "step\ttotal\tcontent\tstyle\ttv"
    return [[float(v) for v in line.split("\t")] for line in lines[1:]]


def test_tiny_run_writes_model_sidecar_and_log(data, tmp_path):
    sidecar, out = run(make_params(), data, tmp_path)
    net, saved = load_model(out / "model")
    assert saved == json.loads((out / "model" / "model.json").read_text())
    # the training time is returned and goes to metrics/timings.json, never into the DVC output
    assert {**saved, "seconds": sidecar["seconds"]} == sidecar and "seconds" not in saved
    for key in ("family", "style", "model", "dataset", "train", "network", "encoder", "style_layers",
                "content_layers", "weights", "style_size", "image_size", "steps", "batch_size", "seed",
                "train_data_sha256", "style_image_sha256", "code_version", "device",
                "processes", "final_losses"):
        assert key in sidecar, key
    assert sidecar["family"] == "johnson" and sidecar["style"] == sidecar["model"] == "tiny"
    assert sidecar["dataset"] == "photos" and sidecar["processes"] == 1
    assert sidecar["train"]["lr"] == 0.01 and sidecar["train"]["image_size"] == 32
    assert sidecar["steps"] == 6 and sidecar["device"] == "cpu" and sidecar["network"] == "fast"
    assert sidecar["code_version"].startswith("0.1.0+")
    assert set(sidecar["final_losses"]) == {"total", "content", "style", "tv"}
    rows = read_log(out / "log.tsv")
    assert [r[0] for r in rows] == [2, 4, 6]
    assert all(abs(r[1] - sum(r[2:])) < 1e-3 * r[1] for r in rows)  # total = content + style + tv
    assert not (tmp_path / "ckpt").exists()  # removed after the final save
    # the machine's side: threads change a float's last bits from the first steps (docs/architecture.md)
    timing = json.loads((tmp_path / "timings.json").read_text())["tiny"]
    assert timing["train_device"] == "cpu" and timing["train_threads"] == torch.get_num_threads()
    assert timing["train_seconds"] > 0
    # a rerun starts the log afresh
    run(make_params(), data, tmp_path)
    assert [r[0] for r in read_log(out / "log.tsv")] == [2, 4, 6]


def test_loss_goes_down(data, tmp_path):
    """The loop learns. Nearest upsampling: on these 40-px crops the default decoder (bilinear +
    blur, no 4-px grid) lowers the loss far more slowly (to 0.89 of the first logged loss in 30
    steps, 0.79 in 90; nearest and pixel shuffle: 0.40-0.42 in 30; docs/style-quality.md), so it
    would test the decoder, not the loop."""
    _, out = run(make_params(steps=30, log_every=5, checkpoint_every=100, upsample="nearest"), data, tmp_path)
    rows = read_log(out / "log.tsv")
    assert rows[-1][1] < 0.7 * rows[0][1]


class Killed(Exception):
    pass


@pytest.mark.parametrize("log_removed", [False, True])
def test_resume_is_bit_identical(data, tmp_path, monkeypatch, log_removed):
    """log_removed: as `dvc repro` does, the stage's outputs (the loss log) are deleted before the
    resumed run; the log still comes out whole."""
    params = make_params(steps=8, checkpoint_every=3, log_every=1)
    _, ref = run(params, data, tmp_path, "uninterrupted")

    def kill_at_5(step):
        if step == 5:
            raise Killed

    monkeypatch.setattr(train_mod, "_on_step", kill_at_5)
    with pytest.raises(Killed):
        run(params, data, tmp_path, "resumed")
    ckpt = torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3
    if log_removed:
        (tmp_path / "resumed" / "log.tsv").unlink()
    monkeypatch.setattr(train_mod, "_on_step", lambda step: None)
    resumed_from = []
    real_load = train_mod.load_checkpoint
    monkeypatch.setattr(train_mod, "load_checkpoint",
                        lambda *a: resumed_from.append(r := real_load(*a)) or r)
    run(params, data, tmp_path, "resumed")
    assert resumed_from[0] is not None and resumed_from[0]["step"] == 3

    a, _ = load_model(ref / "model")
    b, _ = load_model(tmp_path / "resumed" / "model")
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    assert (ref / "log.tsv").read_text() == (tmp_path / "resumed" / "log.tsv").read_text()
    assert not (tmp_path / "ckpt").exists()


def kill_at(step_to_die: int):
    def on_step(step):
        if step == step_to_die:
            raise Killed
    return on_step


def test_resume_with_changed_config_is_refused(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "_on_step", kill_at(4))
    with pytest.raises(Killed):
        run(make_params(steps=8), data, tmp_path, "first")
    ckpt = tmp_path / "ckpt" / "checkpoint.pt"
    assert ckpt.is_file()
    monkeypatch.setattr(train_mod, "_on_step", lambda step: None)
    before = ckpt.read_bytes()
    with pytest.raises(train_mod.ResumeRefused, match=r"step 3.*lr: 0\.01 -> 0\.02.*--model tiny --fresh") as refused:
        run(make_params(steps=8, lr=0.02), data, tmp_path, "second")
    assert "steps" not in str(refused.value)  # names only what changed
    assert ckpt.read_bytes() == before  # refusing loses nothing
    assert not (tmp_path / "second" / "model").exists()


def test_resume_refused_when_training_code_changed(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "_on_step", kill_at(4))
    with pytest.raises(Killed):
        run(make_params(steps=8), data, tmp_path, "first")
    monkeypatch.setattr(train_mod, "_on_step", lambda step: None)
    real = train_mod.code_hashes
    assert "models/losses.py" in real("johnson") and "models/johnson/network.py" in real("johnson")
    monkeypatch.setattr(train_mod, "code_hashes", lambda family: {**real(family), "models/losses.py": "edited"})
    with pytest.raises(train_mod.ResumeRefused, match="models/losses.py changed"):
        run(make_params(steps=8), data, tmp_path, "second")


def test_fresh_discards_the_checkpoint_and_matches_a_clean_run(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "_on_step", kill_at(4))
    with pytest.raises(Killed):
        run(make_params(steps=8), data, tmp_path, "first")
    monkeypatch.setattr(train_mod, "_on_step", lambda step: None)
    changed = make_params(steps=8, lr=0.02)
    train_mod.train(changed, "tiny", paths(data, tmp_path, "second"), fresh=True)
    _, clean = run(changed, data, tmp_path, "clean")
    a, _ = load_model(tmp_path / "second" / "model")
    b, _ = load_model(clean / "model")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_training_on_new_data_keeps_the_network_fingerprint(data, tmp_path):
    """The nightly's case: the same params on new photos and a new painting give new weights and a new
    training record, and the same network_fingerprint, so auto's remembered backend and layout hold."""
    from tasks.bulk.backends import network_fingerprint
    from tasks.bulk.plan import weights_sha256

    _, first = run(make_params(), data, tmp_path, "first")
    new_photos = write_photos(tmp_path / "new" / "processed" / "photos" / "train", 5).parent
    new_painting = tmp_path / "new" / "raw" / "models" / "tiny"
    write_painting(new_painting / "files" / "src-4567cdef" / "paint.jpg", colour=(30, 90, 250), period=5)
    _, second = run(make_params(), (new_photos, new_painting), tmp_path, "second")
    a, b = json.loads((first / "model/model.json").read_text()), json.loads((second / "model/model.json").read_text())
    assert a["train_data_sha256"] != b["train_data_sha256"] and a["final_losses"] != b["final_losses"]
    shas = [weights_sha256(d / "model") for d in (first, second)]
    assert shas[0] != shas[1]
    assert network_fingerprint(first / "model", shas[0]) == network_fingerprint(second / "model", shas[1])
    _, slim = run(make_params(network="slim"), data, tmp_path, "slim")
    assert network_fingerprint(slim / "model", weights_sha256(slim / "model")) != network_fingerprint(first / "model",
                                                                                                        shas[0])


def test_step_samples_partition_the_single_process_stream():
    single = list(StepSamples(0, 5, 3))
    assert single == list(range(15))
    assert list(StepSamples(2, 5, 3)) == list(range(6, 15))  # a resumed run
    two = [list(StepSamples(0, 5, 3, rank=r, world=2)) for r in (0, 1)]
    assert sorted(two[0] + two[1]) == list(range(30)) and not set(two[0]) & set(two[1])
    assert two[0][:3] == [0, 1, 2] and two[1][:3] == [3, 4, 5]


def test_bad_layer_name_lists_valid_ones(data, tmp_path):
    with pytest.raises(StageError, match=r"'block5.expnd'.*valid names: .*block5\.expand"):
        run(make_params(style_layers=["stem", "block5.expnd"]), data, tmp_path)


def test_style_layer_weights_reach_the_loss(data, tmp_path):
    weighted = make_params(style_layers=["stem", "block5.expand"], palette_weight=0.0,
                           style_layer_weights={"stem": 0.0, "block5.expand": 0.0})
    _, out = run(weighted, data, tmp_path)
    assert all(r[3] == 0 and r[2] > 0 for r in read_log(out / "log.tsv"))  # style 0, content not


def test_style_layer_weights_must_name_style_layers_in_use(data, tmp_path):
    with pytest.raises(StageError, match=r"style_layer_weights names 'block3.expand', not among .*: stem, block5"):
        run(make_params(style_layers=["stem", "block5.expand"], style_layer_weights={"block3.expand": 0.5}),
            data, tmp_path)
    with pytest.raises(ConfigError, match=r"style_layer_weights.stem: Input should be greater than or equal to 0"):
        make_params(style_layer_weights={"stem": -1.0})


def test_missing_inputs_name_the_upstream_stage(data, tmp_path):
    from dataclasses import replace

    params = make_params()
    with pytest.raises(StageError, match="run the preprocess stage"):
        train_mod.train(params, "tiny", replace(paths(data, tmp_path), data=tmp_path / "nope"))
    with pytest.raises(StageError, match="run the download stage"):
        train_mod.train(params, "tiny", replace(paths(data, tmp_path), inputs=tmp_path / "nope"))
    with pytest.raises(StageError, match="unknown model 'other'"):
        train_mod.train(params, "other", paths(data, tmp_path))


def test_default_paths_are_the_dvc_stages():
    p = train_mod.Paths.for_model(make_params(), "tiny", Path("root"))
    assert p == train_mod.Paths(Path("root/data/processed/photos"), Path("root/data/raw/models/tiny"),
                                Path("root/data/models/tiny"), Path("root/metrics/train/tiny.tsv"),
                                Path("root/.cache/checkpoints/tiny"))


def test_main_help(capsys):
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--help"])
    assert e.value.code == 0 and "--model" in capsys.readouterr().out


def test_a_style_url_without_an_extension_is_found_by_its_content(sandbox, server):
    # https://host/painting?id=3: download stores it as files/<source-id>/painting
    from stylepipe.config import Source
    from tasks.download import download
    from tests.hostile import corpus
    from tests.hostile.fixtures import pipeline_params

    photo = server.add("/photo.png", corpus.encode(corpus.noise_rgb(seed=1), "PNG"))
    url = server.add("/painting", corpus.encode(corpus.noise_rgb(seed=2), "JPEG")) + "?id=3"
    params = pipeline_params([Source(url=photo)], {"p": Source(url=url)})
    download(params, raw_dir=sandbox.data / "raw", weights_dir=sandbox.data / "weights")
    style_dir = sandbox.data / "raw" / "models" / "p"
    found = find_style_image(style_dir)
    assert found.name == "painting" and found.parent.parent == style_dir / "files"
    assert load_style_image(found, 32).shape == (3, 24, 32)

    (found.parent / "notes").write_text("not an image")  # other files are not candidates
    assert find_style_image(style_dir) == found
    (found.parent / "copy").write_bytes(found.read_bytes())  # still exactly one image
    with pytest.raises(StageError, match=r"exactly one style image .*found 2: .*copy, .*painting"):
        find_style_image(style_dir)
    found.unlink()
    (found.parent / "copy").unlink()
    with pytest.raises(StageError, match=r"no style image .*\(1 files, none of them an image: .*notes\)"):
        find_style_image(style_dir)


def test_paintings_older_than_their_raw_files_are_refused(tmp_path):
    """adain reads a second processed dataset (its paintings), which DVC does not order before
    train@: training refuses one that is missing or behind data/raw, and says what to run."""
    import pyarrow.parquet as pq

    from tasks.train import check_preprocessed
    from tests.tiny_training import write_paintings

    processed = tmp_path / "data/processed/paintings"
    with pytest.raises(StageError, match=r"repro preprocess@paintings"):
        check_preprocessed(processed)                                 # never preprocessed
    write_paintings(processed)
    raw = tmp_path / "data/raw/datasets/paintings"
    raw.mkdir(parents=True)
    listed = pq.read_table(processed / "manifest.parquet").column("sha256").to_pylist()
    (raw / "manifest.json").write_text(json.dumps([{"sha256": s} for s in listed]))
    check_preprocessed(processed)                                     # up to date
    (raw / "manifest.json").write_text(json.dumps([{"sha256": s} for s in [*listed, "f" * 64]]))
    with pytest.raises(StageError, match=r"older than .*raw/datasets/paintings"):
        check_preprocessed(processed)                                 # a painting preprocess has not seen


def test_dataloader_workers_default_to_none_on_a_cpu_and_some_on_cuda(monkeypatch):
    """On CUDA the step outruns one process's decoding (the H200 measurement in loader_workers);
    on a CPU workers would take the step's cores; data held in memory needs none; an explicit
    train.workers always wins. Several training processes share the cores."""
    monkeypatch.setattr(train_mod, "cpu_count", lambda: 16)
    assert train_mod.loader_workers(None, cuda=False, world=1, in_memory=False) == 0
    assert train_mod.loader_workers(None, cuda=True, world=1, in_memory=False) == 8
    assert train_mod.loader_workers(None, cuda=True, world=4, in_memory=False) == 3
    assert train_mod.loader_workers(None, cuda=True, world=1, in_memory=True) == 0
    assert train_mod.loader_workers(2, cuda=False, world=1, in_memory=False) == 2
    monkeypatch.setattr(train_mod, "cpu_count", lambda: 2)
    assert train_mod.loader_workers(None, cuda=True, world=1, in_memory=False) == 1
