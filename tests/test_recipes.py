import pytest

from fmnist.config import TrainConfig
from fmnist.errors import FmnistError
from fmnist.models import list_models, model_info
from fmnist.recipes import (
    MODEL_ALIASES,
    MODEL_FIGURES,
    MODEL_RECIPES,
    PRESETS,
    PROFILES,
    REFERENCE_MODELS,
    SPACE_ALIASES,
    Profile,
    get_profile,
)


def test_every_model_has_a_recipe_and_every_recipe_a_model():
    assert set(MODEL_RECIPES) == set(list_models())
    assert set(MODEL_FIGURES) <= set(list_models()) and set(REFERENCE_MODELS) <= set(MODEL_FIGURES)
    for p in PRESETS.values():
        assert p.model in list_models()
        TrainConfig.for_model(p.name)  # every preset's settings are valid TrainConfig fields
    for prof in PROFILES.values():
        for model, settings in (prof.recipes or {}).items():
            assert model in list_models(), (prof.name, model)
            TrainConfig.for_model(model, **settings)


def test_figures_say_what_they_measure():
    assert model_info("cnn_bn").reference.accuracy == 0.9137
    assert model_info("cnn_bn").reference.text == "reference project 002: CNN 2 (BatchNorm, Dropout), test accuracy"
    assert "validation accuracy (it published no test figure)" in model_info("lenet5").reference.text
    assert model_info("resnet_fm").reference is None and model_info("resnet_fm").recipe["optimizer"] == "sgd"


def test_old_names_work_for_one_release_with_a_note(capsys):
    for old, new in MODEL_ALIASES.items():
        assert model_info(old).name == new
        assert TrainConfig.for_model(old).model == new  # a run records the new name
    assert "is now called 'mlp_5x128'" in capsys.readouterr().err
    from fmnist.tuning import load_space

    for old, new in SPACE_ALIASES.items():
        assert load_space(old) == load_space(new)
    from fmnist.study import Row

    old_row = {"key": "k", "technique": "t", "model": "m", "test_accuracy": 0.9, "ci95": [0.89, 0.91],
               "interval": "Wilson", "seed_figure": 0.88, "reference": "r", "verdict": "v", "train_seconds": 1.0,
               "parameters": 1, "command": "fmnist", "recipe": "r"}
    assert Row.from_dict(old_row).reference_figure == 0.88


def test_profiles_are_checked_by_name():
    assert get_profile("quick").cv_epochs == 5 and get_profile("tiny").limit == 500
    with pytest.raises(FmnistError, match="profile 'nope' unknown; choose from tiny, quick, full"):
        get_profile("nope")
    with pytest.raises(FmnistError, match="profile x: limit must be a whole number of at least 1"):
        Profile(name="x", limit=0)
    with pytest.raises(FmnistError, match="preset 'fastest' unknown"):
        Profile(name="x", preset="fastest")
