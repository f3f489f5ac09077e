"""The dataset's own label errors: out-of-fold probabilities, then confident learning (cleanlab).

Training rows get their probabilities from k-fold cross-validation (`fmnist cv`'s folds: resumable, and several
workers can share them through --storage); test rows from a model trained on the training split. cleanlab
(Northcutt et al. 2021, "Confident Learning") finds the rows whose given label disagrees with those probabilities
more than the estimated noise allows, and ranks them by self-confidence, the probability of the given label.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.config import TrainConfig
from fmnist.data import Dataset, Split
from fmnist.errors import FmnistError, require_extra
from fmnist.files import atomic_path, prepare_out_dir, write_json
from fmnist.rundir import RunDir


@dataclass(frozen=True)
class Retrained:
    """The model retrained without the training suspects, beside the one trained on every row (same recipe)."""

    test_accuracy: float  # against the given test labels
    test_accuracy_all_rows: float  # the model trained on every training row
    difference: float  # retrained minus all-rows
    ci95: tuple[float, float]  # paired interval of the difference
    p_value: float  # McNemar
    rows_dropped: int
    test_errors_on_suspects: int  # the retrained model's test errors that fall on suspected test labels
    test_errors: int


@dataclass(frozen=True)
class LabelIssues:
    """What `find_label_issues` found: suspects per split, ranked, and what it took."""

    model: str
    folds: int
    train_suspects: int
    test_suspects: int
    train_rows: int
    test_rows: int
    oof_accuracy: float  # out-of-fold accuracy on the training rows (against the given labels)
    test_accuracy: float | None  # the all-rows model on the test split (against the given labels)
    test_errors: int | None  # that model's test errors ...
    test_errors_on_suspects: int | None  # ... and how many of them fall on suspected test labels
    seconds: float
    table: Any = field(repr=False, compare=False)  # pandas DataFrame: label_issues.csv
    retrained: Retrained | None = None

    def to_dict(self) -> dict[str, Any]:
        """summary.json's content."""
        d = asdict(self)
        d.pop("table")
        return d


def _issues(split: str, labels: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]) -> Any:
    """The rows of one split that cleanlab calls label issues, as a DataFrame, most likely error first."""
    import pandas as pd
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = probs / probs.sum(axis=1, keepdims=True)
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    idx = np.flatnonzero(flagged)
    suggested = probs[idx].argmax(axis=1)
    df = pd.DataFrame({"split": split, "index": idx, "given": labels[idx], "suggested": suggested,
                       "given_name": [class_names[i] for i in labels[idx]],
                       "suggested_name": [class_names[i] for i in suggested],
                       "score": 1.0 - quality[idx],  # how likely the given label is wrong: 1 - p(given label)
                       "p_given": probs[idx, labels[idx]], "p_suggested": probs[idx, suggested]})
    return df.sort_values("score", ascending=False, kind="stable")


def find_label_issues(config: TrainConfig, ds: Dataset, out_dir: str | os.PathLike, folds: int = 5,
                      retrain: bool = False, storage: str | None = None, progress: bool | None = None,
                      log: Any = print, **cv_options: Any) -> LabelIssues:
    """Find likely label errors in the training and test splits; write out_dir/label_issues.csv, suspects.png and
    summary.json. With retrain, also train without the training suspects and compare on the test split.

    Rerunning with the same out_dir continues: finished folds and the all-rows model are kept. storage and
    cv_options (study_name, heartbeat, timeout) are cross_validate's: workers sharing a storage share the folds.
    """
    from fmnist.cv import cross_validate
    from fmnist.metrics import accuracy, paired_comparison
    from fmnist.run import finished, train_run

    require_extra("labels", "cleanlab")  # before any training, not after the folds
    if ds.test is None:
        raise FmnistError(f"{ds.source}: finding label issues needs a test split too (give --test-data)")
    start = time.perf_counter()
    out = prepare_out_dir(out_dir, existing="keep")
    log(f"[1/3] out-of-fold probabilities of the {len(ds.train):,} training rows ({folds}-fold cross-validation)")
    cv = cross_validate(config, ds, folds, out / "cv", storage=storage, progress=progress, log=log,
                        keep_probabilities=True, **cv_options)
    if not cv.complete:
        raise FmnistError(f"cross-validation stopped with {cv.finished} of {folds} folds; run again to continue")
    log(f"[2/3] test probabilities: {config.model} trained on every training row")
    run = _finished(out / "model", config, len(ds.train)) or finished(
        train_run(config, ds, out / "model", progress=progress, log=log, existing="overwrite"))
    test_probs = _probabilities(run, ds.test)
    log("[3/3] confident learning (cleanlab)")
    import pandas as pd

    train_df = _issues("train", ds.train.labels, cv.oof_probabilities, ds.class_names)
    test_df = _issues("test", ds.test.labels, test_probs, ds.class_names)
    table = pd.concat([train_df, test_df], ignore_index=True).sort_values("score", ascending=False, kind="stable")
    with atomic_path(out / "label_issues.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    from fmnist import plots

    top = table.head(40)
    images = [(ds.train if sp == "train" else ds.test).images[i] for sp, i in zip(top["split"], top["index"],
                                                                                  strict=True)]
    plots.label_suspects(images, [f"{sp} #{i}\ngiven: {g}\nsuggested: {s}\n({p:.0%})" for sp, i, g, s, p in zip(
        top["split"], top["index"], top["given_name"], top["suggested_name"], top["p_suggested"], strict=True)],
        len(table), out / "suspects.png")
    predicted = test_probs.argmax(axis=1)
    wrong = predicted != ds.test.labels
    suspects = np.zeros(len(ds.test), bool)
    suspects[test_df["index"].to_numpy()] = True
    retrained = None
    if retrain:
        retrained = _retrain(config, ds, train_df["index"].to_numpy(), out / "retrained", wrong, suspects,
                             progress, log, paired_comparison)
    result = LabelIssues(
        model=config.model, folds=folds, train_suspects=len(train_df), test_suspects=len(test_df),
        train_rows=len(ds.train), test_rows=len(ds.test),
        oof_accuracy=accuracy(ds.train.labels, cv.oof_probabilities),
        test_accuracy=accuracy(ds.test.labels, predicted), test_errors=int(wrong.sum()),
        test_errors_on_suspects=int((wrong & suspects).sum()), seconds=time.perf_counter() - start, table=table,
        retrained=retrained)
    write_json(out / "summary.json", result.to_dict())
    return result


def _finished(run_dir: Path, config: TrainConfig, rows: int) -> Any:
    """The run in run_dir when an earlier call finished it with this config on this many training rows, else None."""
    import json

    from fmnist.run import Run

    try:
        data = json.loads(RunDir(run_dir).config.read_text())["data"]
        if RunDir(run_dir).metrics.is_file() and data["train_rows"] + data["val_rows"] == rows:
            run = Run.load(run_dir)
            return run if run.config == config and not run.metrics.interrupted else None
    except (OSError, ValueError, KeyError, FmnistError):
        pass
    return None


def _probabilities(run: Any, split: Split) -> np.ndarray:
    from fmnist.inference import numpy_logits
    from fmnist.metrics import softmax

    return softmax(numpy_logits(run.model, split.images, tta=run.config.tta_views))


def _retrain(config: TrainConfig, ds: Dataset, drop: np.ndarray, out: Path, wrong_all: np.ndarray,
             suspects: np.ndarray, progress: bool | None, log: Any, paired_comparison: Any) -> Retrained:
    import dataclasses

    from fmnist.run import finished, train_run

    keep = np.setdiff1d(np.arange(len(ds.train)), drop)
    clean = dataclasses.replace(ds, train=ds.train.take(keep))
    log(f"retraining without the {len(drop):,} training suspects ({len(keep):,} rows)")
    run = _finished(out, config, len(keep)) or finished(
        train_run(config, clean, out, progress=progress, log=log, existing="overwrite"))
    wrong = _probabilities(run, ds.test).argmax(axis=1) != ds.test.labels
    pc = paired_comparison(~wrong, ~wrong_all)
    return Retrained(test_accuracy=float((~wrong).mean()), test_accuracy_all_rows=float((~wrong_all).mean()),
                     difference=pc.difference, ci95=pc.ci95, p_value=pc.p_value, rows_dropped=int(len(drop)),
                     test_errors_on_suspects=int((wrong & suspects).sum()), test_errors=int(wrong.sum()))


def format_issues(r: LabelIssues) -> str:
    """What was found, in a few lines."""
    lines = [f"{r.train_suspects:,} of {r.train_rows:,} training labels and {r.test_suspects:,} of {r.test_rows:,} "
             f"test labels look wrong ({r.model}, {r.folds}-fold out-of-fold accuracy {r.oof_accuracy:.2%}; "
             f"{r.seconds / 60:.1f} min)"]
    if r.test_errors is not None:
        lines.append(f"the model trained on every row: test accuracy {r.test_accuracy:.2%}; "
                     f"{r.test_errors_on_suspects} of its {r.test_errors} test errors fall on suspected test labels")
    if r.retrained is not None:
        t = r.retrained
        lines.append(f"retrained without the {t.rows_dropped:,} training suspects: test accuracy {t.test_accuracy:.2%} "
                     f"vs {t.test_accuracy_all_rows:.2%} ({100 * t.difference:+.2f} points, 95% interval "
                     f"[{100 * t.ci95[0]:+.2f}, {100 * t.ci95[1]:+.2f}], McNemar p = {t.p_value:.3g}); "
                     f"{t.test_errors_on_suspects} of its {t.test_errors} test errors fall on suspected test labels")
    top = r.table.head(5)
    lines += [f"  {row['split']} #{int(row['index'])}: given {row['given_name']}, suggested {row['suggested_name']} "
              f"(score {row['score']:.3f})" for _, row in top.iterrows()]
    return "\n".join(lines)
