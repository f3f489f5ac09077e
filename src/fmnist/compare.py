"""Runs side by side: `fmnist runs` lists run directories, `fmnist compare` tests whether they differ.

A comparison is paired: every run scored the same test images (checked by the test set's fingerprint), so the
images on which exactly one of two runs is right decide the difference (McNemar's exact test, and the interval of
the paired difference: `metrics.paired_comparison`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.errors import FmnistError
from fmnist.files import prepare_out_dir, write_json
from fmnist.rundir import METRICS, RunDir


@dataclass(frozen=True)
class RunSummary:
    """One run directory, as `fmnist runs` lists it."""

    dir: str
    model: str
    test_accuracy: float | None
    val_accuracy: float | None
    train_seconds: float | None
    parameters: int | None
    epochs: int | None
    date: str  # when metrics.json was written


def find_runs(roots: list[str | os.PathLike]) -> list[RunSummary]:
    """Every run directory (holding metrics.json and model.safetensors) under the roots."""
    import time

    found = []
    for root in roots:
        r = Path(root)
        if not r.exists():
            raise FmnistError(f"{r}: no such directory")
        for m in sorted(r.rglob(METRICS)) if r.is_dir() else []:
            d, rd = m.parent, RunDir(m.parent)
            if not rd.model.is_file():
                continue  # an evaluation's metrics.json, not a run
            try:
                mj = json.loads(m.read_text())
                cfg = json.loads(rd.config.read_text()) if rd.config.is_file() else {}
            except (OSError, json.JSONDecodeError, RecursionError):
                continue
            if not isinstance(mj, dict) or not isinstance(cfg, dict):
                continue  # valid JSON of another shape: not a run's files
            model = mj.get("model")
            found.append(RunSummary(str(d), model if isinstance(model, str) and model.isprintable() else "?",
                                    _num(mj, "test_accuracy"), _num(mj, "val_accuracy"), _num(mj, "train_seconds"),
                                    _num(mj, "parameters", int), _num(cfg, "epochs", int),
                                    time.strftime("%Y-%m-%d %H:%M", time.localtime(m.stat().st_mtime))))
    return found


def _num(d: dict, key: str, kind: type = float) -> Any:
    """d[key] when it is a number of that kind (a file of another shape gives None, never a wrong type)."""
    v = d.get(key)
    ok = (int,) if kind is int else (int, float)
    return v if isinstance(v, ok) and not isinstance(v, bool) else None


SORT_KEYS = {"test": "test_accuracy", "val": "val_accuracy", "time": "train_seconds", "date": "date",
             "model": "model"}


def sort_runs(runs: list[RunSummary], by: str = "test") -> list[RunSummary]:
    """Runs sorted by a column (test, val, time, date: highest first; model: by name); unknown values last."""
    if by not in SORT_KEYS:
        raise FmnistError(f"sort key '{by}' unknown; choose from {', '.join(SORT_KEYS)}")
    key = SORT_KEYS[by]
    return sorted(runs, key=lambda r: (getattr(r, key) is None, getattr(r, key) or 0), reverse=by != "model")


def format_runs(runs: list[RunSummary]) -> str:
    """A table of runs."""
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v:.2%}"

    lines = [f"{'run':<44}{'model':<22}{'test acc':>9}{'val acc':>9}{'train s':>9}{'params':>11}  date"]
    for r in runs:
        lines.append(f"{r.dir[-43:]:<44}{r.model:<22}{pct(r.test_accuracy):>9}{pct(r.val_accuracy):>9}"
                     f"{(r.train_seconds or 0):>9.0f}{(r.parameters or 0):>11,}  {r.date}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Pair:
    """Run a against run b on the same test images."""

    a: str
    b: str
    accuracy_difference: float  # a - b
    ci95: tuple[float, float]
    p_value: float  # McNemar's exact test
    only_a: int  # test images only a gets right
    only_b: int


@dataclass(frozen=True)
class ComparedRun:
    """One run of a comparison."""

    dir: str
    model: str
    test_accuracy: float
    per_class_recall: dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """`fmnist compare`: the runs, the settings in which they differ, and a paired test for each pair."""

    runs: list[ComparedRun]
    config_differences: dict[str, list[Any]]  # setting -> its value in each run
    pairs: list[Pair]
    test_set: str  # the fingerprint of the test images every run was scored on


def compare_runs(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike | None = None) -> Comparison:
    """Config differences, per-class accuracies and a paired test for each pair of runs; with out_dir,
    compare.json and compare.png."""
    from fmnist.metrics import paired_comparison
    from fmnist.run import Run

    if len(run_dirs) < 2:
        raise FmnistError("compare needs at least two run directories")
    runs = [Run.load(d) for d in run_dirs]
    sets = []
    for r in runs:
        if r.metrics.test is None or r.metrics.test.predictions is None:
            raise FmnistError(f"{r.dir}: no test_predictions.npz (a run without a test split, or saved by an older "
                              "fmnist): retrain it to compare")
        sets.append(json.loads(RunDir(r.dir).metrics.read_text()).get("test_set"))
    if len(set(sets)) != 1 or sets[0] is None:
        raise FmnistError("the runs were tested on different test sets (" + ", ".join(
            f"{r.dir}: {s or 'unknown'}" for r, s in zip(runs, sets, strict=True)) + "); a paired comparison needs "
            "the same images")
    with np.load(RunDir(runs[0].dir).test_predictions, allow_pickle=False) as z:
        labels = z["labels"]
    correct = [r.metrics.test.predictions == labels for r in runs]
    pairs = []
    for i, j in combinations(range(len(runs)), 2):
        c = paired_comparison(correct[i], correct[j])
        pairs.append(Pair(str(runs[i].dir), str(runs[j].dir), c.difference, c.ci95, c.p_value, c.only_a, c.only_b))
    cfgs = [r.config.to_dict() for r in runs]
    differ = sorted(k for k in cfgs[0] if len({json.dumps(c.get(k), sort_keys=True) for c in cfgs}) > 1)
    result = Comparison(
        [ComparedRun(str(r.dir), r.config.model, r.metrics.test_accuracy,
                     {n: v["recall"] for n, v in r.metrics.test.per_class.items()}) for r in runs],
        {k: [c.get(k) for c in cfgs] for k in differ}, pairs, sets[0])
    if out_dir is not None:
        out = prepare_out_dir(out_dir, existing="keep")
        write_json(out / "compare.json", result)
        from fmnist import plots

        plots.compare_runs([r.history for r in runs], [Path(r.dir).name for r in runs],
                           [r.per_class_recall for r in result.runs], out / "compare.png")
    return result


def format_compare(result: Comparison, out_dir: str | os.PathLike | None = None) -> str:
    """What `fmnist compare` prints of `compare_runs`'s result."""
    from fmnist.errors import printable
    from fmnist.metrics import beyond_noise

    lines = [f"{printable(r.dir)}: {r.model}, test accuracy {r.test_accuracy:.2%}" for r in result.runs]
    if result.config_differences:
        lines.append("settings that differ: " + "; ".join(f"{k} {v}" for k, v in result.config_differences.items()))
    for p in result.pairs:
        lo, hi = p.ci95
        verdict = "a difference beyond noise" if beyond_noise(p.p_value) else "no difference beyond noise"
        lines.append(f"{printable(p.a)} - {printable(p.b)}: {100 * p.accuracy_difference:+.2f} points "
                     f"[{100 * lo:+.2f}, {100 * hi:+.2f}], McNemar p = {p.p_value:.3g} ({p.only_a} vs "
                     f"{p.only_b} images right in one only): {verdict}")
    if out_dir is not None:
        lines.append(f"wrote {printable(out_dir)}/compare.json and compare.png")
    return "\n".join(lines)
