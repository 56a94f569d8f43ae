"""models/sidecar.py: every reader of a model's sidecar gets a dict or a StageError saying why."""
import pytest

from models.sidecar import SIDECAR_FILE, read_sidecar
from stylepipe.cli import main
from stylepipe.errors import StageError


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    (b"\xff\xfe{", "not a valid JSON sidecar"),                 # not UTF-8
    (b'{"family": ', "not a valid JSON sidecar"),
    (b"[" * 100_000, "not a valid JSON sidecar: nested too deeply"),  # json.loads: RecursionError
    (b"[1, 2]", "must be a JSON object"),
    (b'"johnson"', "must be a JSON object"),
])
def test_an_unreadable_sidecar_is_a_stage_error_saying_why(tmp_path, content, message):
    if content is not None:
        (tmp_path / SIDECAR_FILE).write_bytes(content)
    with pytest.raises(StageError, match=message):
        read_sidecar(tmp_path)


def test_a_sidecar_folder_that_is_a_directory_is_a_stage_error(tmp_path):
    (tmp_path / SIDECAR_FILE).mkdir()
    with pytest.raises(StageError, match="cannot be read"):
        read_sidecar(tmp_path)


def test_a_sidecar_is_read_as_written(tmp_path):
    (tmp_path / SIDECAR_FILE).write_text('{"family": "dcgan", "num_classes": 10}', encoding="utf-8")
    assert read_sidecar(tmp_path) == {"family": "dcgan", "num_classes": 10}


@pytest.mark.parametrize("command,content", [
    ("sample", "[" * 100_000), ("sample", "[]"),
    ("translate", "[" * 100_000), ("translate", "[]"), ("translate", '{"family": ["cyclegan"]}'),
])
def test_the_cli_refuses_a_hostile_sidecar_in_one_line(tmp_path, capsys, command, content):
    """A model folder from elsewhere: `stylepipe sample` / `translate` exit 2 with the reason, no traceback."""
    model = tmp_path / "m"
    model.mkdir()
    (model / SIDECAR_FILE).write_text(content)
    args = [str(model), "--count", "1"] if command == "sample" else [str(tmp_path), "--model", str(model)]
    assert main([command, *args, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{model}: not a trained model folder" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,message", [
    ('{"family": "cyclegan", "directions": 5}', "directions must be a list"),
    ('{"family": "cyclegan", "directions": ["a2b", 1]}', "directions must be a list"),
    ('{"family": "pix2pix", "directions": ["x2y"]}', "directions must be a list"),
])
def test_translate_refuses_a_sidecar_with_odd_directions(tmp_path, capsys, content, message):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / SIDECAR_FILE).write_text(content)
    assert main(["translate", str(tmp_path), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("value", ['"ten"', "[10]", "1e400", "10000000000", "-1", "true"])
def test_sample_refuses_a_sidecar_with_odd_num_classes(tmp_path, capsys, value):
    """(a huge one would have been a list of that many labels)"""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / SIDECAR_FILE).write_text(f'{{"family": "cgan", "conditional": true, "num_classes": {value}}}')
    assert main(["sample", str(tmp_path / "m"), "--count", "1", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "num_classes must be a whole number" in capsys.readouterr().err


def test_the_infer_stage_refuses_odd_num_classes(tmp_path):
    from tasks.infer import _all_labels

    (tmp_path / SIDECAR_FILE).write_text('{"family": "cgan", "conditional": true, "num_classes": 1e12}')
    with pytest.raises(StageError, match="num_classes must be a whole number"):
        _all_labels(tmp_path)
    (tmp_path / SIDECAR_FILE).write_text('{"family": "cgan", "conditional": true, "num_classes": 3}')
    assert _all_labels(tmp_path) == [0, 1, 2]


def test_sample_refuses_a_model_that_is_not_a_generator(tmp_path, capsys):
    """(it used to run the style network on seeds and fail every output with a shape error)"""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / SIDECAR_FILE).write_text('{"family": "johnson", "network": "fast"}')
    assert main(["sample", str(tmp_path / "m"), "--count", "2", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "a johnson model, not a generator" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sample_draws_from_a_generator_through_the_cli(tmp_path, capsys):
    """The refusals above leave a real generator's job alone: --count images, the labels in turn."""
    import torch

    from models.cgan.family import build
    from models.cgan.params import TrainParams
    from models.weights import save_model

    tp = TrainParams(nz=8, ngf=8, image_size=28, emb_dim=4)
    sidecar = {"family": "cgan", "train": tp.model_dump(), "channels": 1, "num_classes": 3, "conditional": True}
    torch.manual_seed(0)
    save_model(tmp_path / "m", build(sidecar), sidecar)
    assert main(["sample", str(tmp_path / "m"), "--count", "6", "--out", str(tmp_path / "out"), "--quiet",
                 "--workers", "0"]) == 0
    assert sorted(len(list(d.glob("*.png"))) for d in (tmp_path / "out").iterdir() if d.name != ".stylepipe") == [2, 2, 2]
