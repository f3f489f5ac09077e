"""Stratified k-fold cross-validation: the same `fit`, once per fold; finished folds resume from disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist.data import Dataset, kfold_splits
from fmnist.io import write_json
from fmnist.train import TrainConfig, fit, numpy_logits


def cross_validate(config: TrainConfig, ds: Dataset, folds: int, out_dir: str | os.PathLike,
                   progress: bool = True, log: Any = print) -> dict:
    """Train one model per fold, validate on the held-out fold, test each fold's model; write cv.json."""
    from fmnist import plots
    from fmnist.models import create_model
    from fmnist.run import provenance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**config.to_dict(), "folds": folds, "provenance": provenance()})
    results, histories = [], []
    for k, (tr, va) in enumerate(kfold_splits(ds.train.labels, folds, config.seed), start=1):
        fold_file = out / f"fold_{k}.json"
        if fold_file.exists():  # resume: this fold finished in an earlier run
            r = json.loads(fold_file.read_text())
            log(f"fold {k}/{folds}: done earlier (val acc {r['val_acc']:.4f})")
        else:
            log(f"fold {k}/{folds}: {len(tr):,} train / {len(va):,} validation images")
            torch.manual_seed(config.seed + k)
            model = create_model(config.model, num_classes=len(ds.class_names), **config.model_params)
            h = fit(model, ds.train.take(tr), ds.train.take(va), config, progress=progress, log=log)
            if h.interrupted:
                raise KeyboardInterrupt
            r = {"fold": k, "history": h.as_dict(), "train_acc": h.train_acc[-1], "train_loss": h.train_loss[-1],
                 "val_acc": h.val_acc[-1], "val_loss": h.val_loss[-1], "train_seconds": h.train_seconds}
            if ds.test is not None:
                logits = numpy_logits(model, ds.test.images, tta=config.tta)
                r["test_acc"] = float((logits.argmax(1) == ds.test.labels).mean())
            write_json(fold_file, r)
        results.append(r)
        histories.append(r["history"])
    summary: dict = {"model": config.model, "folds": folds, "per_fold": [
        {k: v for k, v in r.items() if k != "history"} for r in results]}
    for key in ("train_acc", "val_acc", "val_loss", "test_acc"):
        vals = [r[key] for r in results if key in r]
        if vals:
            summary[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1
                            else 0.0}
    plots.fold_curves(histories, out / "fold_curves.png", title=f"{config.model}: {folds}-fold cross-validation")
    plots.fold_bars(summary["per_fold"], out / "fold_metrics.png", title=f"{config.model}: metrics per fold")
    write_json(out / "cv.json", summary)
    return summary


def format_cv(summary: dict) -> str:
    """A table of per-fold metrics and their mean ± std."""
    lines = [f"{'fold':>5}{'train acc':>11}{'val acc':>10}{'val loss':>10}{'test acc':>10}"]
    for r in summary["per_fold"]:
        lines.append(f"{r['fold']:>5}{r['train_acc']:>11.4f}{r['val_acc']:>10.4f}{r['val_loss']:>10.4f}"
                     f"{r.get('test_acc', float('nan')):>10.4f}")
    ms = [summary.get(k, {"mean": float("nan"), "std": float("nan")}) for k in
          ("train_acc", "val_acc", "val_loss", "test_acc")]
    lines.append(f"{'mean':>5}" + "".join(f"{m['mean']:>{w}.4f}" for m, w in zip(ms, (11, 10, 10, 10), strict=True)))
    lines.append(f"{'std':>5}" + "".join(f"{m['std']:>{w}.4f}" for m, w in zip(ms, (11, 10, 10, 10), strict=True)))
    return "\n".join(lines)
