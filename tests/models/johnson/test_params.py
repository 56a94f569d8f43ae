from typing import get_args

import pytest
from pydantic import ValidationError

from models.encoders import default_layers
from models.johnson.family import resolve_layers
from models.johnson.params import DEFAULT_LR, PRESETS, RECIPES, TrainParams
from tasks.train import RUN_ONLY


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
    with pytest.raises(ValidationError, match="recipe"):
        TrainParams(recipe="shapes")
    named, _none = get_args(TrainParams.model_fields["recipe"].annotation)  # Literal[...] | None
    assert set(get_args(named)) == set(RECIPES)


def test_a_dumped_model_takes_another_preset():
    """What a preset filled in stays unset: dumped without unset fields, another preset applies."""
    dumped = TrainParams(preset="standard", lr=1e-3).model_dump(exclude_unset=True)
    assert dumped == {"preset": "standard", "lr": 1e-3}
    assert TrainParams.model_validate({**dumped, "preset": "full"}).steps == 40_000


def test_the_forms_recipe_fills_in_what_is_not_set():
    forms = TrainParams(recipe="forms", preset="standard")
    assert (forms.network, forms.upsample, forms.output_gradient_floor, forms.content_weight) == ("classic", "bilinear",
                                                                                                 0.01, 6.0)
    assert forms.lr == DEFAULT_LR["classic"] and forms.steps == PRESETS["standard"]["steps"]
    # its layers: the encoder's default style layers and the stride-32 one, all valid names
    assert resolve_layers(forms)[0] == [*default_layers("efficientnet_lite0")[0], "block15.expand"]
    mine = TrainParams(recipe="forms", network="fast", content_weight=3.0)
    assert (mine.network, mine.lr, mine.content_weight, mine.upsample) == ("fast", DEFAULT_LR["fast"], 3.0, "bilinear")
    # what it filled in stays unset, and a recipe never shares its list with a model
    assert TrainParams(recipe="forms").model_dump(exclude_unset=True) == {"recipe": "forms"}
    forms.style_layers.append("head")
    assert "head" not in RECIPES["forms"]["style_layers"]


def test_a_recipe_is_its_settings():
    """A model trained with the recipe is the one trained with its settings written out: the same
    training identity (what tasks/train.py hashes and a resume compares)."""
    for name, settings in RECIPES.items():
        spelled_out = TrainParams(**settings).model_dump(exclude=RUN_ONLY)
        assert TrainParams(recipe=name).model_dump(exclude=RUN_ONLY) == spelled_out
        assert TrainParams().model_dump(exclude=RUN_ONLY) != spelled_out


def test_a_recipe_for_another_encoder_needs_its_layers():
    with pytest.raises(ValidationError, match="recipe"):
        TrainParams(recipe="forms", encoder="vgg16")
    assert TrainParams(recipe="forms", encoder="vgg16", style_layers=["relu1_2"]).network == "classic"


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
