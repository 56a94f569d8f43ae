import pytest
from pydantic import ValidationError

from models.johnson.params import DEFAULT_LR, PRESETS, TrainParams


def test_a_preset_fills_in_what_is_not_set():
    assert TrainParams().preset == "quick"
    assert (TrainParams().steps, TrainParams().image_size) == (PRESETS["quick"]["steps"], PRESETS["quick"]["image_size"])
    full = TrainParams(preset="full")
    assert (full.steps, full.image_size) == (40_000, 256)
    assert TrainParams(preset="standard").steps == PRESETS["standard"]["steps"] != PRESETS["quick"]["steps"]
    # what the model's train: section says wins over the preset
    mine = TrainParams(preset="full", steps=123)
    assert (mine.steps, mine.image_size) == (123, 256)


def test_unknown_preset_and_statistic_are_refused():
    with pytest.raises(ValidationError, match="preset"):
        TrainParams(preset="huge")
    with pytest.raises(ValidationError, match="statistic"):
        TrainParams(statistic="histogram")


def test_a_dumped_model_takes_another_preset():
    """What a preset filled in stays unset: dumped without unset fields, another preset applies."""
    dumped = TrainParams(preset="standard", lr=1e-3).model_dump(exclude_unset=True)
    assert dumped == {"preset": "standard", "lr": 1e-3}
    assert TrainParams.model_validate({**dumped, "preset": "full"}).steps == 40_000


def test_the_learning_rate_follows_the_network_unless_given():
    assert TrainParams().lr == DEFAULT_LR["fast"] == 2e-3
    assert TrainParams(network="classic").lr == DEFAULT_LR["classic"] == 1e-3
    assert TrainParams(network="classic", lr=5e-3).lr == 5e-3
    dumped = TrainParams(network="classic").model_dump(exclude_unset=True)
    assert "lr" not in dumped and TrainParams.model_validate({**dumped, "network": "slim"}).lr == 2e-3


@pytest.mark.parametrize("floor", [-0.01, 0.25])
def test_output_gradient_floor_is_below_the_sigmoids_largest_slope(floor):
    with pytest.raises(ValidationError, match="output_gradient_floor"):
        TrainParams(output_gradient_floor=floor)
