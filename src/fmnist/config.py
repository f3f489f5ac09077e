"""Training settings: a frozen TrainConfig, and the one place where a model's recipe, a preset and explicit
settings are resolved into it (recipe < preset < settings), for the library and the CLI alike."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from fmnist.errors import FmnistError
from fmnist.recipes import PRESETS, get_preset

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "muon")
SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTATIONS = ("crop", "flip", "altflip", "rotate", "erase")
PRECISIONS = ("auto", "bf16", "fp32")
ERASE_AREA = 0.16  # the largest fraction of the image one random-erasing rectangle covers, by default


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:  # noqa: A002
    # the help text and choices become the CLI's --flag (cli.py builds one per field)
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Saved as config.json next to its results.

    Build one with `TrainConfig.for_model(name, **settings)` to start from the model's recipe, as the CLI does;
    `TrainConfig(model=name)` starts from the generic defaults below.
    """

    model: str = "lenet5"  # a name from list_models()
    model_params: dict[str, Any] = field(default_factory=dict)  # factory arguments, e.g. {"activation": "tanh"}
    epochs: int = _opt(10, "training epochs")
    batch_size: int = _opt(128, "images per optimizer step")
    optimizer: str = _opt("adam", "optimizer (muon: Muon for the hidden weight matrices, sgd for the rest)",
                          OPTIMIZERS)
    lr: float = _opt(1e-3, "peak learning rate")
    muon_lr: float = _opt(0.02, "muon: peak learning rate of the hidden weight matrices (the rest: sgd at lr)")
    momentum: float = _opt(0.9, "sgd and rmsprop momentum")
    nesterov: bool = _opt(False, "sgd: Nesterov momentum")
    weight_decay: float = _opt(0.0, "weight decay: decoupled for adamw, PyTorch's coupled one otherwise")
    l2: float = _opt(0.0, "Keras-style L2 penalty: l2 * sum of squared dense/conv weights, added to the loss")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy, in [0, 1)")
    schedule: str = _opt("constant", "learning-rate schedule", SCHEDULES)
    warmup_epochs: float = _opt(0.0, "linear warmup for constant/cosine (onecycle warms up over 25%% of steps)")
    patience: int = _opt(0, "early stopping after this many epochs without a lower validation loss, restoring "
                            "the best weights; 0 = off")
    val_fraction: float = _opt(0.2, "stratified holdout of the training data for validation; 0 = train on all")
    augment: str = _opt("", "batch augmentation: comma list of crop, flip, altflip "
                         "(each image mirrored every other epoch), rotate, erase")
    erase_area: float = _opt(ERASE_AREA, "with --augment erase: the largest fraction of the image one erased rectangle "
                                   "covers (the smallest is 0.02; Zhong et al.'s random erasing uses 0.4)")
    ema: float = _opt(0.0, "exponential moving average of the weights, e.g. 0.999, kept beside the training "
                           "weights: each epoch is validated on the average and the run keeps it; 0 = off")
    tta: bool = _opt(False, "test-time augmentation: average the logits of the image and its mirror")
    tta_shifts: bool = _opt(False, "with tta: also the image and its mirror shifted one pixel up, down, left and "
                                   "right (10 views instead of 2)")
    seed: int = _opt(0, "random seed of the split, initialization, batches and augmentation")
    device: str = _opt("auto", "auto (cuda when available), cpu, cuda or cuda:N")
    precision: str = _opt("auto", "auto: bf16 where the hardware has it", PRECISIONS)
    channels_last: bool = _opt(True, "NHWC activations: faster convolutions and pooling on CPU (oneDNN)")

    @classmethod
    def for_model(cls, model: str, preset: str | None = None, recipe: bool = True,
                  model_params: dict[str, Any] | None = None, **settings: Any) -> TrainConfig:
        """The config `fmnist train MODEL` uses: the model's recipe, replaced by a preset's settings when one is
        named, then the explicit settings. MODEL may be a preset's name (`for_model("fast")`)."""
        from fmnist.models import list_models, model_info

        if model in PRESETS and model not in list_models():  # `fmnist train fast`: the preset and its model
            if preset not in (None, model):
                raise FmnistError(f"'{model}' is a preset; do not give preset {preset!r} with it")
            model, preset = PRESETS[model].model, model
        info = model_info(model)  # an unknown name: one line listing the known ones; an old one: its new name
        model = info.name
        base = dict(get_preset(preset).config) if preset else info.recipe if recipe else {}
        if preset and get_preset(preset).model == model:  # the preset's own model gets its parameters too
            model_params = {**get_preset(preset).model_params, **(model_params or {})}
        unknown = sorted(set(settings) - {f.name for f in fields(cls)} - {"model"})
        if unknown:
            raise FmnistError(f"unknown training setting {', '.join(unknown)}; the settings: "
                              f"{', '.join(f.name for f in fields(cls) if f.name not in ('model', 'model_params'))}")
        return cls(model=model, model_params=dict(model_params or {}), **{**base, **settings})

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise FmnistError(f"optimizer '{self.optimizer}' unknown; choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise FmnistError(f"schedule '{self.schedule}' unknown; choose from {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise FmnistError(f"precision '{self.precision}' unknown; choose from auto, bf16, fp32")
        check_device(self.device)
        for f in fields(self):  # types first: a library caller may pass "0.1" or None
            v = getattr(self, f.name)
            want = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(f.type)
            if want and (not isinstance(v, want) or (isinstance(v, bool) and f.type != "bool")):
                raise FmnistError(f"{f.name} must be {'a number' if f.type == 'float' else f'a {f.type}'}, "
                                  f"got {v!r}")
            if f.type == "float" and not math.isfinite(v):
                raise FmnistError(f"{f.name} must be a finite number, got {v}")
        if not isinstance(self.model_params, dict):
            raise FmnistError(f"model_params must be a dict, got {self.model_params!r}")
        if not 0 <= self.seed < 2**32:
            raise FmnistError(f"seed must be a whole number from 0 to {2**32 - 1:,}, got {self.seed}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise FmnistError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "muon_lr"):
            if getattr(self, name) <= 0:
                raise FmnistError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "l2", "warmup_epochs", "patience", "momentum"):
            if getattr(self, name) < 0:
                raise FmnistError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.momentum >= 1:
            raise FmnistError(f"momentum must be below 1, got {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise FmnistError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.val_fraction < 1:
            raise FmnistError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.patience and self.val_fraction == 0:
            raise FmnistError("patience (early stopping) needs a validation split: set val_fraction above 0")
        if self.tta_shifts and not self.tta:
            raise FmnistError("tta_shifts needs tta (it adds shifted views to the mirror): give --tta, or "
                              "--no-tta-shifts too")
        if not 0.02 < self.erase_area <= 1:
            raise FmnistError(f"erase_area must be above 0.02 (the smallest rectangle) and at most 1, "
                              f"got {self.erase_area}")
        if not 0 <= self.ema < 1:
            raise FmnistError(f"ema must be in [0, 1), got {self.ema}")
        bad = [a for a in augment_ops(self.augment) if a not in AUGMENTATIONS]
        if bad:
            raise FmnistError(f"augmentation '{bad[0]}' unknown; choose from {', '.join(AUGMENTATIONS)}")
        if {"flip", "altflip"} <= set(augment_ops(self.augment)):
            raise FmnistError("augment: give flip (random mirroring) or altflip (alternating), not both")

    @property
    def tta_views(self) -> str:
        """The test-time augmentation to predict with: "" (none), "flip" or "flip+shifts"."""
        return tta_views_of({"tta": self.tta, "tta_shifts": self.tta_shifts})

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a dict (config.json), ignoring keys it does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict."""
        return asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed (validated like a new config)."""
        return replace(self, **changes)



def tta_views_of(config: dict) -> str:
    """The test-time augmentation of a saved config (a checkpoint's or config.json's dict): "", "flip" or
    "flip+shifts"."""
    return ("flip+shifts" if config.get("tta_shifts") else "flip") if config.get("tta") else ""


def augment_ops(spec: str) -> list[str]:
    """'crop, flip' -> ['crop', 'flip']."""
    return [s.strip() for s in spec.split(",") if s.strip()]



def check_device(name: str) -> None:
    """A one-line error unless `name` is auto, cpu, cuda or cuda:N."""
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise FmnistError(f"device '{name}' unknown; choose from auto, cpu, cuda (or cuda:N)")
