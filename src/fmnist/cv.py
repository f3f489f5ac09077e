"""Stratified (repeated) k-fold cross-validation: the same `fit` once per fold, each fold a trial of a study."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch

from fmnist.config import TrainConfig
from fmnist.data import Dataset, kfold_splits
from fmnist.errors import FmnistError
from fmnist.files import prepare_out_dir, write_json
from fmnist.loop import fit
from fmnist.workers import (
    HEARTBEAT_SECONDS,
    count_finished,
    open_study,
    redact,
    run_worker,
    sampler_seed,
    signature_name,
    storage_url,
)


def cross_validate(config: TrainConfig, ds: Dataset, folds: int, out_dir: str | os.PathLike, repeats: int = 1,
                   storage: str | None = None, study_name: str | None = None, heartbeat: int = HEARTBEAT_SECONDS,
                   timeout: float | None = None, progress: bool | None = None, log: Any = print) -> dict:
    """Train one model per fold (and per repeat: the k-fold split redrawn with seed + repeat), validate on the
    held-out fold, test each fold's model; write cv.json and plots once every fold is done.

    Each fold is a trial of an Optuna study (SQLite in out_dir, or `storage`), so finished folds survive an
    interruption, and several workers (`fmnist cv ... --storage postgresql://...`) can share the folds.
    """
    import optuna
    from optuna.trial import TrialState

    from fmnist import plots
    from fmnist.models import create_model
    from fmnist.run import evaluate, provenance

    if folds < 2 or repeats < 1:
        raise FmnistError(f"need at least 2 folds and 1 repeat, got {folds} folds and {repeats} repeats")
    kfold_splits(ds.train.labels, folds, config.seed)  # refuses too few rows per class before any file is written
    if timeout is not None and not timeout > 0:
        raise FmnistError(f"--timeout must be a positive number of seconds, got {timeout}")
    from fmnist.inference import resolve_device

    resolve_device(config.device)
    out = prepare_out_dir(out_dir, existing="keep")  # a study in it resumes
    write_json(out / "config.json", {**config.to_dict(), "folds": folds, "repeats": repeats,
                                     "provenance": provenance()})
    url = storage_url(storage, out / "cv.db")
    signature = {"kind": "cv", "config": config.to_dict() | {"device": None}, "folds": folds, "repeats": repeats,
                 "data": ds.source, "train_rows": len(ds.train), "test_rows": len(ds.test) if ds.test else 0}
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
        h = fit(model, ds.train.take(tr), ds.train.take(va), cfg, progress=progress, log=log)
        if h.interrupted:
            raise KeyboardInterrupt
        res = {"repeat": r, "fold": k, "history": h.as_dict(), "train_acc": h.train_acc[-1],
               "train_loss": h.train_loss[-1], "val_acc": h.kept_val_accuracy, "val_loss": h.kept_val_loss,
               "train_seconds": h.train_seconds}
        if ds.test is not None:
            res["test_acc"] = evaluate(model, ds.test, ds.class_names, tta=config.tta).accuracy
        trial.set_user_attr("result", res)
        return res["val_acc"]

    done = count_finished(study)
    if done:
        log(f"{done} of {total} folds finished earlier (study '{name}' in {redact(url)})")
    w = run_worker(study, suggest, run, total, unique=True, timeout=timeout, log=log)
    if not w.complete:
        log(f"stopped with {w.finished} of {total} folds finished; run the same command again to continue")
        return {"model": config.model, "folds": folds, "repeats": repeats, "complete": False,
                "finished": w.finished, "study_name": name, "storage": redact(url)}
    results = sorted((t.user_attrs["result"] for t in study.get_trials(states=(TrialState.COMPLETE,))),
                     key=lambda r: (r["repeat"], r["fold"]))
    summary: dict = {"model": config.model, "folds": folds, "repeats": repeats, "complete": True,
                     "study_name": name, "storage": redact(url),
                     "per_fold": [{k: v for k, v in r.items() if k != "history"} for r in results]}
    for key in ("train_acc", "val_acc", "val_loss", "test_acc"):
        vals = [r[key] for r in results if key in r]
        if vals:
            summary[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1
                            else 0.0}
    title = f"{config.model}: {folds}-fold cross-validation" + (f", {repeats} repeats" if repeats > 1 else "")
    plots.fold_curves([r["history"] for r in results], out / "fold_curves.png", title=title)
    plots.fold_bars(summary["per_fold"], out / "fold_metrics.png", title=f"{config.model}: metrics per fold")
    write_json(out / "cv.json", summary)
    return summary


def format_cv(summary: dict) -> str:
    """A table of per-fold metrics and their mean ± std."""
    if not summary.get("complete", True):
        return f"{summary['finished']} of {summary['folds'] * summary['repeats']} folds finished"
    lines = [f"{'fold':>5}{'train acc':>11}{'val acc':>10}{'val loss':>10}{'test acc':>10}"]
    for r in summary["per_fold"]:
        fold = f"{r['repeat'] + 1}.{r['fold']}" if summary.get("repeats", 1) > 1 else str(r["fold"])
        lines.append(f"{fold:>5}{r['train_acc']:>11.4f}{r['val_acc']:>10.4f}{r['val_loss']:>10.4f}"
                     f"{r.get('test_acc', float('nan')):>10.4f}")
    ms = [summary.get(k, {"mean": float("nan"), "std": float("nan")}) for k in
          ("train_acc", "val_acc", "val_loss", "test_acc")]
    lines.append(f"{'mean':>5}" + "".join(f"{m['mean']:>{w}.4f}" for m, w in zip(ms, (11, 10, 10, 10), strict=True)))
    lines.append(f"{'std':>5}" + "".join(f"{m['std']:>{w}.4f}" for m, w in zip(ms, (11, 10, 10, 10), strict=True)))
    return "\n".join(lines)
