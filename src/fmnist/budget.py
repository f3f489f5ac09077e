"""Time budgets: plan a training run to end, with its whole schedule, inside a wall-clock budget on this machine.

A one-cycle or cosine schedule cut short by a timeout is a badly trained model, so the budget is spent before
training starts, not during it: a few training steps of the real model on the real data are timed (counted
inside the budget), an image's evaluation too, and the epochs are set so that training, each epoch's validation,
the test evaluation, the calibration and the pictures end inside the budget. The plan is printed, recorded in the
run (config.json, metrics.json) with what it took, and a resumed run keeps it (its epochs are in its config).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import time
from dataclasses import dataclass, fields
from typing import Any

from fmnist.errors import FmnistError

MARGIN = 0.08  # of the budget, kept for what the measurements cannot see (a slower epoch, the machine's noise)
FRONTIER_IMAGES = 54_000  # the training images of the frontier's measured runs (recipes.BUDGET_FRONTIER)
FIXED_SECONDS = 4.0  # saving the checkpoint, history and metrics, and drawing the run's pictures


def parse_duration(text: str | float | int) -> float:
    """'2m', '600s', '1h30m', '90' (seconds) -> seconds; one clear line for anything else."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s?)?", s)
        if not s or parts is None or not any(parts.groups()):
            raise FmnistError(f"time budget {text!r}: expected a duration such as 90s, 2m, 10m or 1h30m")
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + sec
    if not math.isfinite(seconds) or seconds <= 0:
        raise FmnistError(f"time budget {text!r}: must be a positive duration")
    return seconds


@dataclass(frozen=True)
class Plan:
    """How a budget is spent: the epochs that fit, and the measured costs they were planned from."""

    budget_seconds: float
    epochs: int
    step_seconds: float  # one optimizer step, measured on this machine
    steps_per_epoch: int
    eval_image_seconds: float  # one image's forward pass with the run's test-time views
    planned_seconds: float  # what the plan expects the whole run to take (measuring included)
    measured_seconds: float  # spent measuring, inside the budget

    def to_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def describe(self, model: str) -> str:
        return (f"time budget {_minutes(self.budget_seconds)}: {self.epochs} epoch(s) of {model} fit here (an epoch "
                f"{self.steps_per_epoch * self.step_seconds:.1f} s: {self.steps_per_epoch} steps of "
                f"{1000 * self.step_seconds:.0f} ms; planned {self.planned_seconds:.0f} s of the "
                f"{self.budget_seconds:.0f} s, measuring included)")


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


def _minutes(s: float) -> str:
    return f"{s / 60:g} min" if s >= 60 and s % 60 == 0 else f"{s:.0f} s"


@dataclass(frozen=True)
class Costs:
    """What a model's run costs on this machine: a training step, one view of an image's evaluation."""

    step_seconds: float
    steps_per_epoch: int
    view_seconds: float  # one image, one test-time view, in the run's precision and device
    measured_seconds: float  # what measuring took


VIEWS = {"": 1, "flip": 2, "flip+shifts": 10}  # forward passes per image of each test-time augmentation


def measure_costs(model: Any, config: Any, train: Any, val: Any) -> Costs:
    """Time a few training steps of `config` on a copy of `model` (the first pass warms up kernels and
    allocations, the second is timed) and the evaluation of up to 1,024 held-out images."""
    import torch

    from fmnist.data import Split
    from fmnist.inference import numpy_logits
    from fmnist.loop import fit

    t0 = time.perf_counter()
    n = len(train)
    bs = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    probe_steps = max(2, min(12, steps_per_epoch))
    # on a copy, so the run starts from the very weights and random state it would have had
    torch_state = torch.get_rng_state()
    timed, trial = 0.0, model
    for rounds in (1, probe_steps):
        trial = copy.deepcopy(model)
        h = fit(trial, Split(train.images[: bs * rounds], train.labels[: bs * rounds]), None,
                config.replace(epochs=1, ema=0.0, patience=0), progress=False, log=lambda *_: None)
        timed = h.train_seconds
    torch.set_rng_state(torch_state)
    sample = (val if val is not None and len(val) else train).images[:1024]
    trial.eval()  # on the run's device, as fit left it
    numpy_logits(trial, sample[:64], tta=config.tta_views)
    t_eval = time.perf_counter()
    numpy_logits(trial, sample, tta=config.tta_views)
    view = (time.perf_counter() - t_eval) / len(sample) / VIEWS[config.tta_views]
    return Costs(timed / probe_steps, steps_per_epoch, view, time.perf_counter() - t0)


def plan_from(costs: Costs, config: Any, n_val: int, n_test: int, budget: float, spent: float = 0.0) -> Plan:
    """The epochs of `config` that fit in `budget` seconds, `spent` of them gone already (measuring included):
    at least 1, or a one-line refusal with what one epoch takes here."""
    views = VIEWS[config.tta_views]
    per_epoch = (costs.steps_per_epoch * costs.step_seconds  # training, then validation (one view)
                 + (n_val + (4096 if config.ema else 0)) * costs.view_seconds)  # EMA: its BatchNorm refresh
    # the test split and the calibration with the run's views, the pictures' heatmaps, the files
    after = (n_test + n_val) * costs.view_seconds * views + 16 * 50 * costs.view_seconds + FIXED_SECONDS
    left = budget * (1 - MARGIN) - spent - after
    epochs = int(left // per_epoch) if per_epoch > 0 else 0
    if epochs < 1:
        raise FmnistError(f"time budget {_secs(budget)} is too short for {config.model} here: one epoch takes about "
                          f"{_secs(per_epoch)} and evaluating {_secs(after)} more; give at least "
                          f"{math.ceil((per_epoch + after + spent) / (1 - MARGIN))} s, or a smaller model")
    return Plan(budget, epochs, costs.step_seconds, costs.steps_per_epoch, costs.view_seconds * views,
                spent + after + epochs * per_epoch, spent)


def plan_epochs(model: Any, config: Any, train: Any, val: Any, test: Any, budget: float,
                started: float | None = None, log: Any = print) -> Plan:
    """The epochs of `config` that fit in `budget` seconds for this model and data on this machine, counted from
    `started` (a time.perf_counter() value: what was spent before, loading the data or building the model, is
    inside the budget) or from this call; the measuring (measure_costs) is inside it too."""
    started = time.perf_counter() if started is None else started
    costs = measure_costs(model, config, train, val)
    plan = plan_from(costs, config, len(val) if val is not None else 0, len(test) if test is not None else 0,
                     budget, time.perf_counter() - started)
    log(plan.describe(config.model))
    return plan


def format_outcome(plan: Plan, actual_seconds: float) -> str:
    """One line at the end of a budgeted run: the plan against what it took."""
    spare = plan.budget_seconds - actual_seconds
    verdict = f"over the budget by {-spare:.0f} s" if spare < 0 else f"within the budget: {spare:.0f} s to spare"
    return (f"time budget {_minutes(plan.budget_seconds)}: planned {plan.planned_seconds:.0f} s, took "
            f"{actual_seconds:.0f} s ({verdict})")


def expected_accuracy(recipe: str, epochs: float, views: str = "flip+shifts") -> float | None:
    """The validation accuracy the frontier's measurements expect of `recipe` trained for `epochs` and predicting
    with `views`: linear in log(epochs) between measured points, the best measured beyond the last, None below
    the fewest measured (an unmeasured regime is never chosen on a guess)."""
    from fmnist.recipes import BUDGET_FRONTIER

    pts = sorted((p.epochs, p.val_accuracy) for p in BUDGET_FRONTIER if p.recipe == recipe and p.views == views)
    if not pts or epochs < pts[0][0]:
        return None
    best: list[tuple[int, float]] = []  # more epochs of a one-cycle schedule are never planned to be worse
    for e, a in pts:
        best.append((e, max(a, best[-1][1]) if best else a))
    for (e0, a0), (e1, a1) in zip(best, best[1:], strict=False):
        if e0 <= epochs <= e1:
            return a0 + (a1 - a0) * (math.log(epochs) - math.log(e0)) / (math.log(e1) - math.log(e0))
    return best[-1][1]


@dataclass(frozen=True)
class Choice:
    """The recipe a budget buys: its config (epochs and test-time views planned), the plan, and what the
    frontier expects of it."""

    recipe: str
    config: Any  # TrainConfig
    plan: Plan
    expected_val_accuracy: float | None
    considered: tuple[str, ...]  # one line per recipe and views weighed

    def describe(self) -> str:
        exp = (f"; the frontier expects about {self.expected_val_accuracy:.1%} on validation"
               if self.expected_val_accuracy is not None else "")
        views = {"": "no test-time views", "flip": "flip views", "flip+shifts": "10 views"}[self.config.tta_views]
        return (f"time budget {_minutes(self.plan.budget_seconds)}: recipe {self.recipe} "
                f"({self.config.model}), {self.plan.epochs} epochs, {views}{exp}")


def with_views(config: Any, views: str) -> Any:
    """`config` predicting with the test-time views named as in VIEWS."""
    return config.replace(tta=views != "", tta_shifts=views == "flip+shifts")


def choose_recipe(configs: dict[str, Any], ds: Any, budget: float, started: float | None = None,
                  log: Any = print) -> Choice:
    """The recipe and test-time views of BUDGET_FRONTIER expected to be most accurate (on validation) in `budget`
    seconds counted from `started`, its epochs planned on this machine. `configs` holds each frontier recipe's
    TrainConfig as it would train on `ds` (fmnist.run.train_within builds them); views its data cannot use (no
    mirrored views on data that is not Fashion-MNIST) are left out."""
    import torch

    from fmnist.data import holdout_split
    from fmnist.models import create_model
    from fmnist.recipes import BUDGET_FRONTIER, RECIPE_COST

    started = time.perf_counter() if started is None else started
    recipes = list(dict.fromkeys(p.recipe for p in BUDGET_FRONTIER))
    fewest = {r: min(p.epochs for p in BUDGET_FRONTIER if p.recipe == r) for r in recipes}
    best: Choice | None = None
    lines: list[str] = []
    base_epoch = None  # seconds of an epoch of the first recipe, to skip recipes that cannot fit
    for recipe in recipes:
        config = configs[recipe]
        if base_epoch is not None:
            guess = base_epoch * RECIPE_COST[recipe] / RECIPE_COST[recipes[0]]
            if guess * fewest[recipe] / 1.5 > budget:
                lines.append(f"{recipe}: not measured, {fewest[recipe]} epochs (its fewest measured) would take "
                             f"about {guess * fewest[recipe]:.0f} s here")
                continue
        tr, va = holdout_split(ds.train.labels, config.val_fraction, config.seed)
        train, val = ds.train.take(tr), ds.train.take(va)
        torch.manual_seed(config.seed)
        model = create_model(config.model, num_classes=len(ds.class_names), **config.model_params)
        costs = measure_costs(model, config, train, val)
        if base_epoch is None:
            base_epoch = costs.steps_per_epoch * costs.step_seconds
        allowed = list(dict.fromkeys(p.views for p in BUDGET_FRONTIER if p.recipe == recipe))
        if not config.tta:  # the data does not allow mirrored views: the recipe as it is, nothing expected
            allowed = [config.tta_views]
        for views in allowed:
            cfg = with_views(config, views) if config.tta else config
            try:
                plan = plan_from(costs, cfg, len(val), len(ds.test) if ds.test is not None else 0, budget,
                                 time.perf_counter() - started)
            except FmnistError as e:
                lines.append(f"{recipe} ({views or 'no views'}): {e}")
                continue
            # the frontier's epochs are passes over its 54,000 training images: on other sizes of data the
            # recipes are compared at the same number of images seen
            seen = plan.epochs * len(train) / FRONTIER_IMAGES
            expected = expected_accuracy(recipe, seen, views) if config.tta else None
            lines.append(f"{recipe} ({config.model}, {views or 'no views'}): {plan.epochs} epochs fit, expected "
                         + (f"{expected:.2%} on validation" if expected is not None else "nothing measured"))
            choice = Choice(recipe, cfg.replace(epochs=plan.epochs), plan, expected, ())
            if best is None or (expected is not None and (best.expected_val_accuracy is None
                                                          or expected > best.expected_val_accuracy)):
                best = choice
    if best is None:  # not even one epoch of the cheapest recipe: its refusal says what one takes
        raise FmnistError(next(line for line in lines).split(": ", 1)[1])
    best = dataclasses.replace(best, considered=tuple(lines))
    for line in lines:
        log(f"  {line}")
    log(best.describe())
    return best
