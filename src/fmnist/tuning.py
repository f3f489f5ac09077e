"""Hyperparameter search on Optuna: grid, random and TPE over a validation split, never the test set.

A search space is a TOML file or a named preset:

    [params.lr]            # a TrainConfig field ...
    type = "float"
    low = 1e-4
    high = 1e-2
    log = true
    [params.dense_units]   # ... or any other name: a model parameter
    type = "int"
    low = 64
    high = 128
    step = 16
    [params.activation]
    type = "categorical"
    choices = ["relu", "tanh"]
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fmnist.config import TrainConfig
from fmnist.data import Dataset, holdout_split
from fmnist.errors import FmnistError, note_renamed
from fmnist.files import prepare_out_dir, write_json
from fmnist.loop import History, fit
from fmnist.recipes import SPACE_ALIASES
from fmnist.tracking import track

if TYPE_CHECKING:
    from fmnist.run import RunMetrics
from fmnist.workers import (
    HEARTBEAT_SECONDS,
    claim_once,
    count_finished,
    grid_points,
    open_study,
    redact,
    run_worker,
    sampler_seed,
    storage_url,
)

# reference project 000's grid (its best: batch 500, 30 epochs, tanh, Adam 1e-3, momentum 0) and reference
# project 001's RandomSearch
SPACES: dict[str, dict] = {
    "reference000": {
        "model": "cnn_dense100",
        "params": {
            "batch_size": {"type": "categorical", "choices": [128, 500]},
            "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "lr": {"type": "categorical", "choices": [1e-3, 1e-2]},
            "momentum": {"type": "categorical", "choices": [0.0, 0.9]},
        },
    },
    "reference001": {
        "model": "lenet5_tuned",
        "params": {
            "dense_units": {"type": "int", "low": 64, "high": 128, "step": 16},
            "lr": {"type": "categorical", "choices": [1e-2, 1e-3]},
        },
    },
    "lr-wd": {
        "params": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
        },
    },
}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "model_params"}


@dataclass(frozen=True)
class TuneResult:
    """Where a search stands and what it found. best_value is the search metric (validation accuracy or loss of
    the kept weights, as RunMetrics.val_accuracy) of the best trial; best_run the retrained best configuration's
    metrics (its test_accuracy the only use of the test set), when this worker retrained it."""

    study_name: str
    storage: str
    sampler: str
    metric: str  # val_accuracy (maximized) or val_loss (minimized)
    n_trials: int  # every trial in the study, failed and surplus ones included
    n_finished: int  # complete + pruned: what --trials counts
    target_trials: int
    complete: bool
    ran_here: int  # trials this worker finished
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float
    best_params: dict[str, Any]
    best_config: TrainConfig
    best_run: RunMetrics | None = None
    best_run_dir: str | None = None
    best_run_by: str | None = None  # the worker that retrains the best configuration, when not this one

    def to_dict(self) -> dict:
        """tune.json's content."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["best_config"] = self.best_config.to_dict()
        d["best_run"] = self.best_run.to_dict() if self.best_run else None
        return d


def load_space(spec: str) -> dict:
    """A preset name or a TOML file -> {'params': {...}, 'model': optional}."""
    if spec in SPACE_ALIASES:  # an old name of the previous release
        spec = note_renamed("search space", spec, SPACE_ALIASES[spec])
    if spec in SPACES:
        return SPACES[spec]
    p = Path(spec)
    if not p.is_file():
        raise FmnistError(f"search space '{spec}': neither a named space ({', '.join(SPACES)}) nor a file")
    try:
        space = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FmnistError(f"{p}: not valid TOML ({e})") from None
    params = space.get("params")
    if not isinstance(params, dict) or not params:
        raise FmnistError(f"{p}: needs a [params.NAME] table for each parameter to search")
    for name, d in params.items():
        t = d.get("type") if isinstance(d, dict) else None
        need = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}.get(t)
        if need is None:
            raise FmnistError(f"{p}: params.{name}.type must be float, int or categorical (got {t!r})")
        missing = [k for k in need if k not in d]
        if missing:
            raise FmnistError(f"{p}: params.{name} needs {', '.join(missing)}")
        if t == "categorical":
            if not isinstance(d["choices"], list) or not d["choices"]:
                raise FmnistError(f"{p}: params.{name}.choices must be a non-empty list")
            continue
        num = int if t == "int" else (int, float)
        if not all(isinstance(d[k], num) and not isinstance(d[k], bool) for k in ("low", "high")):
            raise FmnistError(f"{p}: params.{name}.low and high must be {'whole ' if t == 'int' else ''}numbers")
        if d["low"] > d["high"]:
            raise FmnistError(f"{p}: params.{name}: low {d['low']} is above high {d['high']}")
        if d.get("log") and d["low"] <= 0:
            raise FmnistError(f"{p}: params.{name}: a log scale needs low above 0, got {d['low']}")
        if "step" in d and (not isinstance(d["step"], num) or d["step"] <= 0):
            raise FmnistError(f"{p}: params.{name}.step must be a positive number")
    return space


def check_space(space: dict, base: TrainConfig) -> None:
    """Every searched name is a TrainConfig field or a parameter of the model, checked before any trial."""
    from fmnist.models import model_info

    known = _CONFIG_FIELDS | set(model_info(base.model).defaults()) - {"num_classes"}
    unknown = sorted(set(space["params"]) - known)
    if unknown:
        raise FmnistError(f"search space: {', '.join(unknown)} is neither a training setting nor a parameter of "
                          f"model '{base.model}' (its parameters: "
                          f"{', '.join(sorted(set(model_info(base.model).defaults()) - {'num_classes'})) or 'none'})")


def _suggest(trial: Any, name: str, d: dict) -> Any:
    if d["type"] == "float":
        return trial.suggest_float(name, d["low"], d["high"], log=d.get("log", False))
    if d["type"] == "int":
        return trial.suggest_int(name, d["low"], d["high"], step=d.get("step", 1), log=d.get("log", False))
    return trial.suggest_categorical(name, d["choices"])


def apply_params(base: TrainConfig, params: dict) -> TrainConfig:
    """base with TrainConfig fields replaced and other names set as model parameters."""
    cfg = {k: v for k, v in params.items() if k in _CONFIG_FIELDS}
    model = {k: v for k, v in params.items() if k not in _CONFIG_FIELDS}
    return dataclasses.replace(base, **cfg, model_params={**base.model_params, **model})


def _sampler(name: str, space: dict, seed: int) -> Any:
    import optuna

    if name == "grid":
        grid = {}
        for k, d in space["params"].items():
            if d["type"] == "categorical":
                grid[k] = list(d["choices"])
            elif d["type"] == "int":
                grid[k] = list(range(d["low"], d["high"] + 1, d.get("step", 1)))
            else:
                raise FmnistError(f"grid search needs discrete values: give params.{k} as categorical choices")
        return optuna.samplers.GridSampler(grid, seed=seed), grid_points(grid)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed), None
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed), None
    raise FmnistError(f"sampler '{name}' unknown; choose from grid, random, tpe")


def tune(base: TrainConfig, ds: Dataset, space: dict, out_dir: str | os.PathLike, sampler: str = "tpe",
         trials: int | None = None, timeout: float | None = None, storage: str | None = None,
         study_name: str | None = None, metric: str = "val_accuracy", retrain: bool = True, progress: bool = False,
         heartbeat: int = HEARTBEAT_SECONDS, log: Any = print, mlflow: str | None = None) -> TuneResult:
    """Run, resume or join a study until it has `trials` finished trials (counting every worker's); then write
    trials.csv, tune.json and plots, and retrain the best configuration once (one worker of a shared study) on the
    same training split, testing it once on the test set.

    With `storage` (e.g. postgresql://...), any number of workers may run this at once on one study; each seeds its
    sampler from its process id so that workers do not draw the same parameters.
    """
    import optuna

    check_space(space, base)
    if timeout is not None and not timeout > 0:
        raise FmnistError(f"--timeout must be a positive number of seconds, got {timeout}")
    from fmnist.inference import resolve_device

    resolve_device(base.device)
    smp, grid = _sampler(sampler, space, sampler_seed(base.seed, storage))
    if trials is None:
        trials = len(grid) if grid else 20
    if metric == "val_acc":
        metric = note_renamed("metric", metric, "val_accuracy")
    if metric not in ("val_accuracy", "val_loss"):
        raise FmnistError(f"metric must be val_accuracy or val_loss, got {metric!r}")
    if trials < 1:
        raise FmnistError(f"--trials must be at least 1, got {trials}")
    if grid and trials > len(grid):
        raise FmnistError(f"--trials {trials} is more than the grid's {len(grid)} points")
    if base.val_fraction == 0:
        raise FmnistError("tuning chooses on a validation split: --val-fraction must be above 0")
    tr_idx, va_idx = holdout_split(ds.train.labels, base.val_fraction, base.seed)
    out = prepare_out_dir(out_dir, existing="keep")  # a study in it resumes
    url = storage_url(storage, out / "study.db")
    study_name = study_name or f"tune-{base.model}"
    direction = "maximize" if metric == "val_accuracy" else "minimize"
    signature = {"kind": "tune", "config": base.to_dict() | {"device": None}, "space": space, "sampler": sampler,
                 "metric": metric, "data": ds.source, "train_rows": len(ds.train)}
    study = open_study(url, heartbeat, study_name, smp, direction, signature,
                       pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    train, val = ds.train.take(tr_idx), ds.train.take(va_idx)

    def suggest(trial: optuna.Trial) -> dict:
        return {k: _suggest(trial, k, d) for k, d in space["params"].items()}

    def run(trial: optuna.Trial, params: dict) -> float:
        from fmnist.models import create_model

        cfg = apply_params(base, params)
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, num_classes=len(ds.class_names), **cfg.model_params)

        def report(h: History) -> None:
            if t is not None:
                t.epoch(h)  # the epoch's curves to MLflow
            trial.report(h.val_accuracy[-1] if metric == "val_accuracy" else h.val_loss[-1], h.epoch[-1])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {h.epoch[-1]}")

        with track(mlflow, f"trial {trial.number}", nested=True) as t:  # a child of this worker's MLflow run
            if t is not None:
                t.params({"trial": trial.number, **params})
            h = fit(model, train, val, cfg, progress=progress, log=lambda *_: None, on_epoch=report)
            if h.interrupted:
                raise KeyboardInterrupt
            # the kept weights' validation figure: what RunMetrics.val_accuracy means everywhere
            value = h.kept_val_accuracy if metric == "val_accuracy" else h.kept_val_loss
            if t is not None:
                t.metrics({metric: value, "train_seconds": h.train_seconds})
        trial.set_user_attr("train_seconds", h.train_seconds)
        log(f"trial {trial.number}: {params} -> {metric} {value:.4f} ({h.train_seconds:.0f}s)")
        return value

    done = count_finished(study)
    if done:
        log(f"study '{study_name}' in {redact(url)}: {done} of {trials} trial(s) finished; "
            + ("joining" if done < trials else "nothing left to run"))
    with track(mlflow, f"tune {study_name}", tags={"kind": "tune", "study": study_name}) as parent:
        if parent is not None:
            parent.params({**base.to_dict(), "space": space, "sampler": sampler, "metric": metric, "trials": trials})
        result = _worker_and_results(study, suggest, run, trials, grid, sampler, timeout, log, out, space, metric,
                                     base, url, study_name, retrain, ds, progress, mlflow, parent)
    return result


def _worker_and_results(study: Any, suggest: Any, run: Any, trials: int, grid: list[dict] | None, sampler: str,
                        timeout: float | None, log: Any, out: Path, space: dict, metric: str, base: TrainConfig,
                        url: str, study_name: str, retrain: bool, ds: Dataset, progress: bool | None,
                        mlflow: str | None, parent: Any) -> TuneResult:
    from optuna.trial import TrialState

    w = run_worker(study, suggest, run, trials, grid=grid, timeout=timeout, log=log)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    if not complete:
        raise FmnistError(f"study '{study_name}' has no completed trial")
    df = study.trials_dataframe(attrs=("number", "value", "params", "state", "duration", "user_attrs"))
    from fmnist.files import atomic_path

    with atomic_path(out / "trials.csv") as tmp:
        df.to_csv(tmp, index=False)
    _plots(study, space, out, metric)
    best_cfg = apply_params(base, study.best_params)
    result = TuneResult(study_name=study_name, storage=redact(url), sampler=sampler, metric=metric,
                        n_trials=len(study.trials), n_finished=w.finished, target_trials=trials,
                        complete=w.complete, ran_here=w.ran, n_complete=len(complete),
                        n_pruned=len(study.get_trials(states=(TrialState.PRUNED,))),
                        n_failed=len(study.get_trials(states=(TrialState.FAIL,))), best_value=study.best_value,
                        best_params=study.best_params, best_config=best_cfg)
    if not w.complete:
        log(f"stopped with {w.finished} of {trials} trials finished; run the same command again to continue")
    elif retrain:
        from fmnist.run import finished, train_run

        # one worker of a shared study retrains; the others say which one (their out_dir may be the same)
        holder = claim_once(url, study_name, f"retrain-best-of-{trials}")
        if holder is None:
            log(f"retraining the best configuration {study.best_params} and testing it once")
            run = finished(train_run(best_cfg, ds, out / "best", progress=progress, log=log, existing="overwrite",
                                     mlflow=mlflow, nested=True))
            result = dataclasses.replace(result, best_run=run.metrics, best_run_dir=str(run.dir))
        else:
            log(f"the best configuration is retrained by worker {holder}, not here")
            result = dataclasses.replace(result, best_run_by=holder)
    write_json(out / "tune.json", result.to_dict())
    if parent is not None:
        parent.metrics({f"best_{metric}": result.best_value, "n_finished": result.n_finished})
        parent.mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
    return result


def _plots(study: Any, space: dict, out: Path, metric: str) -> None:
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    from fmnist.files import save_figure

    trials = study.get_trials(states=(TrialState.COMPLETE,))
    values = np.array([t.value for t in trials])
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([t.number for t in trials], values, "o", label="trial")
    best = np.maximum.accumulate(values) if study.direction.name == "MAXIMIZE" else np.minimum.accumulate(values)
    ax.plot([t.number for t in trials], best, "-", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="Optimization history")
    ax.legend()
    save_figure(fig, out / "optimization_history.png")
    names = list(space["params"])
    fig = Figure(figsize=(3.6 * len(names), 3.2), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):  # validation metric vs each parameter (seed 004's sweeps)
        xs = [t.params.get(n) for t in trials]
        if all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
            ax.plot(xs, values, "o")
            if space["params"][n].get("log"):
                ax.set_xscale("log")
        else:
            cats = sorted({str(x) for x in xs})
            ax.plot([cats.index(str(x)) for x in xs], values, "o")
            ax.set_xticks(range(len(cats)), cats)
        ax.set(xlabel=n, ylabel=metric)
    fig.suptitle(f"{metric} vs each parameter")
    save_figure(fig, out / "params.png")
    if len(trials) >= 3 and len(names) > 1:
        import optuna

        try:
            imp = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):
            return
        fig = Figure(figsize=(6, 0.4 * len(imp) + 1.2), layout="constrained")
        ax = fig.subplots()
        ax.barh(list(imp)[::-1], list(imp.values())[::-1], color="tab:purple")
        ax.set(xlabel="importance (fANOVA)", title="Parameter importances")
        save_figure(fig, out / "param_importances.png")


def format_tune(r: TuneResult, out: str | os.PathLike) -> str:
    """What `fmnist tune` prints: the best value and settings, the trials, the retrained model's test accuracy."""
    lines = [f"best {r.metric} {r.best_value:.4f} with {r.best_params} ({r.n_complete} complete, {r.n_pruned} "
             f"pruned of {r.target_trials}; this worker ran {r.ran_here})"]
    if r.best_run is not None and r.best_run.test_accuracy is not None:
        lines.append(f"best configuration retrained: test accuracy {r.best_run.test_accuracy:.4f}")
    lines.append(f"wrote {out}/tune.json, trials.csv and plots")
    return "\n".join(lines)
