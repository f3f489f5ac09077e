"""The model registry: every architecture is a small factory `name(num_classes=10, **params) -> nn.Module`.

Contract for every model: input (B, 1, 28, 28) float (normalized pixels), output (B, num_classes) logits.
A model may carry `l2: float`, a Keras-style kernel regularizer that the training loop adds to the loss
(l2 * sum of squared weights of its dense and conv layers). A layer with a method `init_from_data(x)` is set from
training images (normalized, (N, 1, 28, 28)) by the training loop once before the first step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from fmnist.errors import FmnistError, note_renamed
from fmnist.recipes import MODEL_ALIASES, Figure


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model."""

    name: str
    family: str
    description: str
    factory: Callable[..., nn.Module]
    pretrained: bool = False  # transfer-learning model: takes `weights=`

    @property
    def recipe(self) -> dict[str, Any]:
        """Its training recipe (TrainConfig fields): the reference project's, or fmnist's own (fmnist.recipes)."""
        from fmnist.recipes import MODEL_RECIPES

        return dict(MODEL_RECIPES.get(self.name, {}))

    @property
    def reference(self) -> Figure | None:
        """The figure its reference project published, for a model that reproduces one."""
        from fmnist.recipes import MODEL_FIGURES

        return MODEL_FIGURES.get(self.name)

    def defaults(self) -> dict[str, Any]:
        """The factory's parameters and their defaults."""
        sig = inspect.signature(self.factory)
        return {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(family: str, description: str, pretrained: bool = False
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: add a factory to the registry under its function name (its recipe lives in fmnist.recipes)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, family, description, fn, pretrained)
        return fn

    return deco


def _ensure_loaded() -> None:
    from fmnist.models import cnn, mlp, resnet, transfer  # noqa: F401  (registers the factories)


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered models (optionally of one family)."""
    _ensure_loaded()
    return [n for n, i in _REGISTRY.items() if family is None or i.family == family]


def model_info(name: str) -> ModelInfo:
    """The registry entry of `name` (an old name of the previous release too, with a note on stderr); an unknown
    name lists the known ones."""
    _ensure_loaded()
    if name in MODEL_ALIASES and name not in _REGISTRY:
        name = note_renamed("model", name, MODEL_ALIASES[name])
    if name not in _REGISTRY:
        raise FmnistError(f"unknown model '{name}'; known models: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 10, **params: Any) -> nn.Module:
    """Build a registered model; unknown parameters get an error that lists the known ones."""
    info = model_info(name)
    known = info.defaults()
    unknown = set(params) - set(known)
    if unknown:
        raise FmnistError(f"model '{name}' has no parameter {', '.join(sorted(unknown))}; "
                          f"its parameters: {', '.join(k for k in known if k != 'num_classes') or 'none'}")
    for k, v in params.items():
        _check_param(name, k, v, known[k], inspect.signature(info.factory).parameters[k].annotation)
    if not info.pretrained:  # its size first, without memory: a typo such as widths=[100000000] is one line
        import torch

        with torch.device("meta"):
            n = count_parameters(info.factory(num_classes=num_classes, **params))
        if n > MAX_PARAMETERS:
            raise FmnistError(f"model '{name}' with {params} would have {n:,} parameters; the limit is "
                              f"{MAX_PARAMETERS:,}")
    try:
        return info.factory(num_classes=num_classes, **params)
    except (ValueError, TypeError) as e:
        raise FmnistError(f"model '{name}': {e}") from None


MAX_PARAMETERS = 1_000_000_000  # 4 GB of fp32 weights, far beyond any 28x28 classifier


def _check_param(model: str, key: str, v: Any, default: Any, annotation: Any) -> None:
    """A parameter of another type than its default's, or of a value no model can be built with, is refused by
    name: sizes are whole numbers of at least 1 (0 where the default is 0), dropout rates in [0, 1), other
    numbers finite and not negative; a tuple default takes a list of sizes (of its length unless its annotation
    says `...`)."""
    import math

    def refuse(what: str) -> FmnistError:
        return FmnistError(f"model '{model}': parameter {key} must be {what} (like its default {default!r}), "
                           f"got {v!r:.60}")

    if isinstance(default, tuple):
        fixed = "..." not in str(annotation)
        if not isinstance(v, list | tuple) or not v or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                for x in v):
            raise refuse("a list of whole numbers")
        if fixed and len(v) != len(default):
            raise refuse(f"a list of {len(default)} whole numbers")
        if min(v) < 1:
            raise refuse("a list of whole numbers of at least 1")
        return
    kinds = (bool,) if isinstance(default, bool) else (int,) if isinstance(default, int) else (int, float) \
        if isinstance(default, float) else (str,) if isinstance(default, str) else None
    if kinds and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
        raise refuse({bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[kinds[-1]])
    if kinds == (int,) and v < min(1, default):
        raise refuse(f"a whole number of at least {min(1, default)}")
    if kinds == (int, float):
        if not math.isfinite(v) or v < 0:
            raise refuse("a finite number, not negative")
        if "dropout" in key and v >= 1:
            raise refuse("a dropout rate in [0, 1)")


# activations that never decrease: max-pooling commutes with them, act(max(a, b)) == max(act(a), act(b))
NON_DECREASING = frozenset({"relu", "tanh", "sigmoid", "elu", "selu", "leaky_relu", "softplus"})


def activation(name: str) -> nn.Module:
    """An activation layer by its Keras-style name."""
    table = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "selu": nn.SELU,
             "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU, "softplus": nn.Softplus}
    if name not in table:
        raise ValueError(f"unknown activation '{name}' (choose from {', '.join(table)})")
    return table[name]()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def format_models() -> str:
    """The table `fmnist models` prints: name, family, parameters (of the ImageNet models: without loading their
    weights) and description."""
    names = list_models()
    if not names:
        return "no models registered"
    lines = [f"{'name':<24}{'family':<12}{'params':>12}  description"]
    for name in names:
        info = model_info(name)
        n = count_parameters(create_model(name, **({"weights": "none"} if info.pretrained else {})))
        lines.append(f"{name:<24}{info.family:<12}{n:>12,}  {info.description}")
    return "\n".join(lines)


__all__ = ["NON_DECREASING", "ModelInfo", "activation", "count_parameters", "create_model", "list_models", "model_info",
           "format_models", "register_model"]
