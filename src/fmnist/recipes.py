"""Every recipe fmnist trains with, as typed data in one place: each model's own recipe, the presets, the study's
profiles, and the figures the reference projects published (docs/reference-projects.md) with what each figure is.

Plain data that imports nothing of fmnist but its errors, so that every other module may read it (the registry, the
config, the study, bench and the CLI) without an import cycle. A recipe is a dict of `TrainConfig` fields;
`TrainConfig.for_model` resolves model recipe < preset < explicit settings.

The presets were chosen on a 10% validation split of the training data; they then train on 98% of the training
images and hold out 2% (1,200 of 60,000): the held-out images calibrate the probabilities (temperature), the
prediction sets and the unusual-picture warning, which must not be fitted on images the model trained on. 2% rather
than 5%: every image held out is one the model does not learn from, and 600 images still fit one temperature and
600 one conformal quantile. The test set is used only to report results. Measured figures of each recipe are in
the documentation's benchmark pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fmnist.errors import FmnistError


# ------------------------------------------------------------------------------------------ reference figures
@dataclass(frozen=True)
class Figure:
    """A figure a reference project published."""

    project: str  # "000" .. "004"
    accuracy: float  # 0..1
    split: Literal["test", "validation"]  # what the project measured it on
    what: str  # the technique, in the project's words

    @property
    def text(self) -> str:
        """'reference project 002: CNN 2 (BatchNorm, Dropout), test accuracy'."""
        note = " (it published no test figure)" if self.split == "validation" else ""
        return f"reference project {self.project}: {self.what}, {self.split} accuracy{note}"


# each model's reference figure, for the models that reproduce a reference project's
MODEL_FIGURES: dict[str, Figure] = {
    "mlp_5x128": Figure("004", 0.88, "test", "the 'Tyler' MLP"),
    "mlp_512_64": Figure("004", 0.88, "test", "the 'Jackson' MLP"),
    "lenet5": Figure("001", 0.8947, "validation", "LeNet-5"),
    "lenet5_tuned": Figure("001", 0.8947, "validation", "tuned LeNet-5"),
    "cnn_basic": Figure("002", 0.901, "test", "CNN 1"),
    "cnn_bn": Figure("002", 0.9137, "test", "CNN 2 (BatchNorm, Dropout)"),
    "cnn_dense100": Figure("000", 0.89579, "test", "its CNN with the grid search's best settings"),
    "vgg16_tl": Figure("000", 0.82678, "test", "VGG16, frozen, new output layer"),
    "vgg19_tl": Figure("000", 0.8294, "test", "VGG19, frozen, new output layer"),
}
# figures of techniques that are not one model's
CV_FIGURE = Figure("000", 0.8725, "test", "5-fold cross-validation, average")
TUNE_FIGURE = Figure("001", 0.8947, "validation", "tuned LeNet-5 (random search)")
TRANSFER_FIGURE = MODEL_FIGURES["vgg19_tl"]  # the study's transfer rows compare with the projects' frozen VGG19

# the reference projects' models trained with their own recipe, in the order of the study's table
REFERENCE_MODELS = ("mlp_512_64", "lenet5", "cnn_basic", "cnn_bn", "cnn_dense100")

# ---------------------------------------------------------------------------------------------- model recipes
_KERAS_MLP = dict(epochs=50, batch_size=128, optimizer="adam", lr=1e-3)  # reference project 004
_LENET = dict(epochs=8, batch_size=32, optimizer="adam", lr=1e-3)  # reference project 001
_FROZEN = dict(epochs=10, batch_size=256, optimizer="adam", lr=1e-3)  # a new head on frozen ImageNet features
_RESNET = dict(epochs=12, batch_size=256, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
               schedule="onecycle", label_smoothing=0.1, augment="crop,flip")  # fmnist's own

# what `fmnist train MODEL` uses: the reference project's recipe for a model that reproduces one, else fmnist's
MODEL_RECIPES: dict[str, dict[str, Any]] = {
    "mlp_5x128": _KERAS_MLP,
    "mlp_512_64": _KERAS_MLP,
    "lenet5": _LENET,
    "lenet5_tuned": _LENET,
    "cnn_basic": dict(epochs=50, batch_size=64, optimizer="adam", lr=1e-3),  # reference project 002
    "cnn_bn": dict(epochs=50, batch_size=64, optimizer="adam", lr=1e-4),  # reference project 002
    "cnn_dense100": dict(epochs=30, batch_size=500, optimizer="adam", lr=1e-3),  # 000's grid search's best
    "resnet_fm": _RESNET,
    "resnet_fm_small": _RESNET,
    "efficientnet_lite0_tl": _FROZEN,
    "vgg16_tl": _FROZEN,
    "vgg19_tl": _FROZEN,
    "resnet50_tl": _FROZEN,
}


# --------------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """A model and the training settings of one speed/accuracy target."""

    name: str
    model: str
    target: str  # what the preset is for
    config: dict[str, Any] = field(default_factory=dict)
    model_params: dict[str, Any] = field(default_factory=dict)  # for its own model only, e.g. {"stem": "whiten"}


_PRESET_BASE = dict(optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle",
                    label_smoothing=0.1, tta=True, val_fraction=0.02, batch_size=256)
_WHITEN = {"stem": "whiten"}  # a frozen 2x2 patch-whitening first layer: faster and more accurate (the ablation)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("fast", "resnet_fm_small", "about 94% test accuracy in a couple of minutes of training",
           dict(_PRESET_BASE, epochs=7, augment="crop,altflip", tta_shifts=True), _WHITEN),
    Preset("best", "resnet_fm_small", "about 95% test accuracy in about five times fast's training",
           dict(_PRESET_BASE, epochs=35, augment="crop,altflip", tta_shifts=True), _WHITEN),
    # max erases rectangles of up to 40% of the image (Zhong et al.'s setting) instead of 16%, and keeps random
    # flips: both chosen on validation with 10 views (the ablation in the documentation's benchmark pages)
    Preset("max", "resnet_fm", "about 95.5% test accuracy, the most accurate recipe (about 15 times fast's training)",
           dict(_PRESET_BASE, epochs=44, augment="crop,flip,erase", erase_area=0.4, tta_shifts=True), _WHITEN),
)}


@dataclass(frozen=True)
class FrontierPoint:
    """One measured point of the accuracy/compute frontier that `fmnist train --time-budget` chooses from.

    val_accuracy is 10-view accuracy on a 10% validation split of the training images (54,000 train, 6,000
    validate, seed 0): never the test set. The documentation's benchmark pages give each point's run.
    """

    recipe: str  # the preset whose settings the point trains with (its epochs replaced)
    epochs: int
    val_accuracy: float
    views: str = "flip+shifts"  # the test-time views it predicts with: "flip+shifts" (10), "flip" (2)


# Along the frontier: resnet_fm_small with fast's recipe up to tens of epochs, then resnet_fm with max's; with
# flip views only where evaluating 10 views would cost epochs that buy more (the shortest budgets).
BUDGET_FRONTIER: tuple[FrontierPoint, ...] = (
    FrontierPoint("fast", 2, 0.9255, "flip"),
    FrontierPoint("fast", 3, 0.9348, "flip"),
    FrontierPoint("fast", 4, 0.9423, "flip"),
    FrontierPoint("fast", 7, 0.9488, "flip"),
    FrontierPoint("fast", 2, 0.9268),
    FrontierPoint("fast", 3, 0.9378),
    FrontierPoint("fast", 4, 0.9433),
    FrontierPoint("fast", 7, 0.9502),  # the fast preset itself
    FrontierPoint("fast", 32, 0.9543),
    FrontierPoint("max", 14, 0.9545),
    FrontierPoint("max", 44, 0.9607),
)
# the training cost of an image under each recipe relative to fast's, to skip measuring a recipe whose fewest
# measured epochs cannot fit (the one that is chosen is measured on the machine before it is planned)
RECIPE_COST = {"fast": 1.0, "max": 2.3}


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a one-line error listing them."""
    if name not in PRESETS:
        raise FmnistError(f"preset '{name}' unknown; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


# ------------------------------------------------------------------------------------------- study profiles
# Converging recipes for the quick profile: fmnist's loop with a one-cycle schedule and enough epochs to converge,
# on the training data less a 10% validation split (the reference projects kept validation sets). Each was chosen
# on that split (test set unused); more epochs were no better on validation where a recipe stops early.
QUICK_RECIPES: dict[str, dict[str, Any]] = {
    "mlp_512_64": dict(epochs=15, batch_size=256, schedule="onecycle", lr=2e-3, val_fraction=0.1),
    "lenet5": dict(epochs=15, batch_size=128, schedule="onecycle", lr=3e-3, val_fraction=0.1),
    "lenet5_tuned": dict(epochs=15, batch_size=128, schedule="onecycle", val_fraction=0.1),  # lr, width: searched
    "cnn_basic": dict(epochs=12, batch_size=128, schedule="onecycle", lr=2e-3, val_fraction=0.1),
    "cnn_bn": dict(epochs=8, batch_size=128, schedule="onecycle", lr=3e-3, val_fraction=0.1),
    "cnn_dense100": dict(epochs=8, batch_size=128, schedule="onecycle", lr=2e-3, val_fraction=0.1),
    # frozen ImageNet features at 64x64 (computed once) and a dense head as project 001 used
    "efficientnet_lite0_tl": dict(epochs=15, batch_size=256, schedule="onecycle", lr=2e-3, val_fraction=0.1,
                                  model_params={"image_size": 64, "head": "mlp"}),
}


@dataclass(frozen=True, kw_only=True)
class Profile:
    """How much work each technique of the study gets."""

    name: str
    limit: int | None = None  # training rows used (None: all)
    test_limit: int | None = None  # test rows used (None: all 10,000)
    recipes: dict[str, dict[str, Any]] | None = None  # per-model settings over its recipe (None: the reference's)
    epoch_cap: int | None = None  # a cap on every recipe's epochs (the tiny profile, for tests)
    cv_model: str = "lenet5"
    folds: int = 5
    cv_epochs: int | None = None  # epochs of each fold's model (None: the recipe's)
    tune_trials: int = 4
    tune_limit: int | None = None  # rows for the search (its validation split is a fifth of them)
    tune_epochs: int = 2
    augment_model: str = "cnn_basic"
    augment_epochs: int | None = None  # the budget of both arms of the augmentation comparison (None: the recipe's)
    transfer: tuple[str, ...] = ("efficientnet_lite0_tl",)
    preset: str = "fast"  # fmnist's own recipe closing the table
    preset_epochs: int | None = None  # cap on the preset's epochs (None: as the preset says)

    def __post_init__(self) -> None:
        for key in ("limit", "test_limit", "epoch_cap", "cv_epochs", "tune_limit", "augment_epochs",
                    "preset_epochs"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise FmnistError(f"profile {self.name}: {key} must be a whole number of at least 1 or None, "
                                  f"got {v!r}")
        if self.folds < 2 or self.tune_trials < 1 or self.tune_epochs < 1:
            raise FmnistError(f"profile {self.name}: needs at least 2 folds, 1 trial and 1 tuning epoch")
        get_preset(self.preset)


PROFILES: dict[str, Profile] = {p.name: p for p in (
    # a smoke test of every step on 500 training and 200 test images, one epoch each: for tests, not for figures
    Profile(name="tiny", limit=500, test_limit=200, recipes=QUICK_RECIPES, epoch_cap=1, folds=2, tune_trials=2,
            tune_limit=300, tune_epochs=1, augment_epochs=1, preset_epochs=1),
    Profile(name="quick", recipes=QUICK_RECIPES, cv_epochs=5, tune_limit=12000),
    Profile(name="full", cv_model="cnn_dense100", tune_trials=20, tune_epochs=8, preset="max",
            transfer=("efficientnet_lite0_tl", "vgg16_tl", "vgg19_tl", "resnet50_tl")),
)}


def get_profile(name: str) -> Profile:
    """The study profile called `name`, or a one-line error listing them."""
    if name not in PROFILES:
        raise FmnistError(f"profile '{name}' unknown; choose from {', '.join(PROFILES)}")
    return PROFILES[name]


# -------------------------------------------------------------------------------------------------- old names
# model and search-space names of the previous release, kept working for one release (the changelog says so)
MODEL_ALIASES: dict[str, str] = {"mlp_tyler": "mlp_5x128", "mlp_jackson": "mlp_512_64",
                                 "cnn_seed000": "cnn_dense100"}
SPACE_ALIASES: dict[str, str] = {"seed000": "reference000", "seed001": "reference001"}
