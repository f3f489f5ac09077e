"""Stratified (repeated) k-fold cross-validation: the same `fit` once per fold, each fold a trial of a study."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from fmnist.config import TrainConfig
from fmnist.data import Dataset, kfold_splits
from fmnist.errors import FmnistError
from fmnist.files import prepare_out_dir, write_json
from fmnist.loop import fit
from fmnist.rundir import CONFIG
from fmnist.tracking import track
from fmnist.workers import (
    HEARTBEAT_SECONDS,
    count_finished,
    grid_points,
    open_study,
    redact,
    run_worker,
    sampler_seed,
    signature_name,
    storage_url,
)


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of one quantity over folds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        """The spread of `values`, None when there are none."""
        if not values:
            return None
        return cls(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values))


@dataclass(frozen=True)
class Fold:
    """One fold's model: its training curves' end, and the same quantities as RunMetrics."""

    repeat: int
    fold: int
    train_accuracy: float  # last epoch, on the fold's training rows
    train_loss: float
    val_accuracy: float  # the kept weights on the held-out fold (RunMetrics.val_accuracy)
    val_loss: float
    test_accuracy: float | None  # the fold's model on the test split; None without one
    train_seconds: float
    history: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class CVResult:
    """A (repeated) k-fold cross-validation: every fold, and each quantity's mean ± std over folds."""

    model: str
    folds: int
    repeats: int
    complete: bool  # False: stopped early; `finished` folds are in the study and a rerun continues
    finished: int
    study_name: str
    storage: str
    per_fold: list[Fold]
    train_accuracy: Spread | None = None
    val_accuracy: Spread | None = None
    val_loss: Spread | None = None
    test_accuracy: Spread | None = None
    # (N, C) out-of-fold class probabilities of every training row (each from the fold that held it out), when
    # cross_validate was asked to keep them; None otherwise
    oof_probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """cv.json's content (per-fold histories and probabilities left out)."""
        d = asdict(dataclasses.replace(self, oof_probabilities=None))
        d.pop("oof_probabilities")
        for f in d["per_fold"]:
            f.pop("history")
        return d


def _pack(probs: np.ndarray) -> str:
    """Probabilities as compact text for a trial's attributes (float16, zlib, base64: ~15 bytes per row of 10), so
    that they live in the study's storage with the fold and every worker sharing it can read them back."""
    import base64
    import zlib

    a = np.ascontiguousarray(probs, dtype=np.float16)
    return f"{a.shape[0]}x{a.shape[1]}:" + base64.b64encode(zlib.compress(a.tobytes(), 6)).decode()


def _unpack(text: str) -> np.ndarray:
    import base64
    import zlib

    shape, data = text.split(":", 1)
    n, c = (int(v) for v in shape.split("x"))
    return np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype=np.float16).reshape(n, c).astype(np.float32)


def cross_validate(config: TrainConfig, ds: Dataset, folds: int, out_dir: str | os.PathLike, repeats: int = 1,
                   storage: str | None = None, study_name: str | None = None, heartbeat: int = HEARTBEAT_SECONDS,
                   timeout: float | None = None, progress: bool | None = None, log: Any = print,
                   mlflow: str | None = None, keep_probabilities: bool = False) -> CVResult:
    """Train one model per fold (and per repeat: the k-fold split redrawn with seed + repeat), validate on the
    held-out fold, test each fold's model; write cv.json and plots once every fold is done.

    Each fold is a trial of an Optuna study (SQLite in out_dir, or `storage`), so finished folds survive an
    interruption, and several workers (`fmnist cv ... --storage postgresql://...`) can share the folds.

    keep_probabilities: also keep each fold's class probabilities on its held-out rows (in the study, with the
    fold), returned as CVResult.oof_probabilities (what `fmnist labels` needs; one repeat only).
    """
    import optuna
    from optuna.trial import TrialState

    from fmnist import plots
    from fmnist.models import create_model
    from fmnist.run import evaluate, provenance

    if folds < 2 or repeats < 1:
        raise FmnistError(f"need at least 2 folds and 1 repeat, got {folds} folds and {repeats} repeats")
    if keep_probabilities and repeats != 1:
        raise FmnistError("out-of-fold probabilities need a single repeat (each row held out once)")
    kfold_splits(ds.train.labels, folds, config.seed)  # refuses too few rows per class before any file is written
    if timeout is not None and not timeout > 0:
        raise FmnistError(f"--timeout must be a positive number of seconds, got {timeout}")
    from fmnist.inference import resolve_device

    resolve_device(config.device)
    out = prepare_out_dir(out_dir, existing="keep")  # a study in it resumes
    write_json(out / CONFIG, {**config.to_dict(), "folds": folds, "repeats": repeats,
                                     "provenance": provenance()})
    url = storage_url(storage, out / "cv.db")
    signature = {"kind": "cv", "config": config.to_dict() | {"device": None}, "folds": folds, "repeats": repeats,
                 "data": ds.source, "train_rows": len(ds.train), "test_rows": len(ds.test) if ds.test else 0,
                 **({"probabilities": True} if keep_probabilities else {})}
    name = study_name or signature_name(f"cv-{config.model}", signature)
    grid = {"repeat": list(range(repeats)), "fold": list(range(1, folds + 1))}
    sampler = optuna.samplers.GridSampler(grid, seed=sampler_seed(config.seed, storage))
    study = open_study(url, heartbeat, name, sampler, "maximize", signature)
    splits: dict[int, list] = {}
    total = folds * repeats

    def suggest(trial: optuna.Trial) -> dict:
        return {"repeat": trial.suggest_categorical("repeat", grid["repeat"]),
                "fold": trial.suggest_categorical("fold", grid["fold"])}

    def run(trial: optuna.Trial, p: dict) -> float:
        r, k = p["repeat"], p["fold"]
        if r not in splits:
            splits[r] = kfold_splits(ds.train.labels, folds, config.seed + r)
        tr, va = splits[r][k - 1]
        log(f"fold {k}/{folds}" + (f" of repeat {r + 1}/{repeats}" if repeats > 1 else "")
            + f": {len(tr):,} train / {len(va):,} validation images")
        cfg = dataclasses.replace(config, seed=config.seed + r)
        torch.manual_seed(cfg.seed + k)
        model = create_model(cfg.model, num_classes=len(ds.class_names), **cfg.model_params)
        with track(mlflow, f"fold {r + 1}.{k}" if repeats > 1 else f"fold {k}", nested=True) as t:
            if t is not None:
                t.params({"repeat": r, "fold": k})
            h = fit(model, ds.train.take(tr), ds.train.take(va), cfg, progress=progress, log=log,
                    on_epoch=t.epoch if t is not None else None)
            if h.interrupted:
                raise KeyboardInterrupt
            test = (evaluate(model, ds.test, ds.class_names, tta=config.tta_views).accuracy
                    if ds.test is not None else None)
            if t is not None:
                t.metrics({"kept_val_accuracy": h.kept_val_accuracy, "test_accuracy": test,
                           "train_seconds": h.train_seconds})
        res = Fold(r, k, h.train_accuracy[-1], h.train_loss[-1], h.kept_val_accuracy, h.kept_val_loss, test,
                   h.train_seconds, h.as_dict())
        if keep_probabilities:
            from fmnist.inference import numpy_logits
            from fmnist.metrics import softmax

            probs = softmax(numpy_logits(model, ds.train.images[va], tta=config.tta_views))
            trial.set_user_attr("val_probabilities", _pack(probs))
        trial.set_user_attr("result", asdict(res))  # kept in the study: a rerun or another worker reads it back
        return res.val_accuracy

    done = count_finished(study)
    if done:
        log(f"{done} of {total} folds finished earlier (study '{name}' in {redact(url)})")
    with track(mlflow, f"cv {name}", tags={"kind": "cv", "study": name}) as parent:
        if parent is not None:
            parent.params({**config.to_dict(), "folds": folds, "repeats": repeats})
        w = run_worker(study, suggest, run, total, grid=grid_points(grid), timeout=timeout, log=log)
    if not w.complete:
        log(f"stopped with {w.finished} of {total} folds finished; run the same command again to continue")
        return CVResult(config.model, folds, repeats, False, w.finished, name, redact(url), [])
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    results = sorted((Fold(**t.user_attrs["result"]) for t in trials), key=lambda f: (f.repeat, f.fold))
    oof = None
    if keep_probabilities:
        oof = np.full((len(ds.train), len(ds.class_names)), np.nan, np.float32)
        split = kfold_splits(ds.train.labels, folds, config.seed)
        for t in trials:
            oof[split[t.user_attrs["result"]["fold"] - 1][1]] = _unpack(t.user_attrs["val_probabilities"])
    tests = [f.test_accuracy for f in results if f.test_accuracy is not None]
    summary = CVResult(config.model, folds, repeats, True, w.finished, name, redact(url), results,
                       train_accuracy=Spread.of([f.train_accuracy for f in results]),
                       val_accuracy=Spread.of([f.val_accuracy for f in results]),
                       val_loss=Spread.of([f.val_loss for f in results]), test_accuracy=Spread.of(tests),
                       oof_probabilities=oof)
    title = f"{config.model}: {folds}-fold cross-validation" + (f", {repeats} repeats" if repeats > 1 else "")
    plots.fold_curves([f.history for f in results], out / "fold_curves.png", title=title)
    plots.fold_bars(results, out / "fold_metrics.png", title=f"{config.model}: metrics per fold")
    write_json(out / "cv.json", summary.to_dict())
    return summary


def format_cv(summary: CVResult) -> str:
    """A table of per-fold metrics and their mean ± std."""
    if not summary.complete:
        return f"{summary.finished} of {summary.folds * summary.repeats} folds finished"
    nan = float("nan")
    lines = [f"{'fold':>5}{'train acc':>11}{'val acc':>10}{'val loss':>10}{'test acc':>10}"]
    for f in summary.per_fold:
        fold = f"{f.repeat + 1}.{f.fold}" if summary.repeats > 1 else str(f.fold)
        test = nan if f.test_accuracy is None else f.test_accuracy
        lines.append(f"{fold:>5}{f.train_accuracy:>11.4f}{f.val_accuracy:>10.4f}{f.val_loss:>10.4f}{test:>10.4f}")
    ms = [m or Spread(nan, nan, 0) for m in (summary.train_accuracy, summary.val_accuracy, summary.val_loss,
                                             summary.test_accuracy)]
    widths = (11, 10, 10, 10)
    lines.append(f"{'mean':>5}" + "".join(f"{m.mean:>{w}.4f}" for m, w in zip(ms, widths, strict=True)))
    lines.append(f"{'std':>5}" + "".join(f"{m.std:>{w}.4f}" for m, w in zip(ms, widths, strict=True)))
    return "\n".join(lines)
