from pathlib import Path

import pytest

from stylepipe.config import ConfigError, load_params, read_raw, validate, write_overrides

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_repo_params_are_valid():
    params = load_params(REPO_PARAMS)
    assert params.styles, "the default params must define at least one style"
    assert params.train.network in {"fast", "classic"}


def test_unknown_key_is_named():
    raw = read_raw(REPO_PARAMS)
    raw["train"]["stepz"] = 3
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        validate(raw)


def test_bad_value_names_key_and_value():
    raw = read_raw(REPO_PARAMS)
    raw["train"]["steps"] = -5
    with pytest.raises(ConfigError, match=r"train\.steps.*-5"):
        validate(raw)


def test_missing_section_is_named():
    raw = read_raw(REPO_PARAMS)
    del raw["download"]
    with pytest.raises(ConfigError, match=r"download: Field required"):
        validate(raw)


def test_bad_style_name():
    raw = read_raw(REPO_PARAMS)
    raw["styles"]["Bad Name!"] = raw["styles"][next(iter(raw["styles"]))]
    with pytest.raises(ConfigError, match="Bad Name!"):
        validate(raw)


def test_per_style_weight_override():
    raw = read_raw(REPO_PARAMS)
    name = next(iter(raw["styles"]))
    raw["styles"][name]["style_weight"] = 7.0
    params = validate(raw)
    assert params.style_loss_weights(name) == (params.train.content_weight, 7.0)


def test_write_overrides_keeps_comments_and_validates(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text())
    changes = write_overrides(path, ["train.steps=10", "stylize.format=png"])
    assert changes[0].startswith("train.steps:") and changes[0].endswith("-> 10")
    params = load_params(path)
    assert (params.train.steps, params.stylize.format) == (10, "png")
    assert "# stylepipe parameters" in path.read_text()  # comments survive the round trip


def test_write_overrides_rejects_bad_value_without_touching_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text())
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"train\.nosuch"):
        write_overrides(path, ["train.nosuch=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        write_overrides(path, ["train.steps"])
    assert path.read_bytes() == before


def test_bad_timezone_is_named():
    raw = read_raw(REPO_PARAMS)
    raw["schedule"]["timezone"] = "Mars/Olympus"
    with pytest.raises(ConfigError, match=r"schedule\.timezone.*Mars/Olympus"):
        validate(raw)
