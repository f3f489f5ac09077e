"""The `max` recipe scaled up for a CUDA GPU: wider (width 64), and as many epochs as fit a time budget.

    python benchmarks/gpu_max.py --out /tmp/cuda [--width 64] [--budget 300] [--seeds 0,1,2] [--json summary.json]
    python benchmarks/gpu_max.py --out /tmp/try --device cpu --limit 3000 --test-limit 500 --budget 20  # a dry run

The seeds train side by side on one GPU (`fmnist train max --device cuda --set width=W --epochs E --seed S`, one
process each: a 28x28 net is small work for a large GPU; whether three side by side beat three in turn was not
measured).
E is set from a short calibration run of the same processes side by side (two epochs on 15,000 images, the second
one timed, scaled to the full 58,800): the most epochs whose training fits --budget seconds, between --min-epochs
and --max-epochs. Prints each seed's test accuracy (the run's own 10-view TTA) and training time, their mean with a
95% interval, and the accuracy of the seeds' average probabilities (an ensemble trained in the same wall time).
The test set chooses nothing here: the recipe is `max`'s, chosen on the CPU validation split, with two numbers
changed in advance (width, and epochs from the budget). Where the dataset is not installed, copy its four IDX files
to a folder and set FMNIST_DATA to it. Measured on an H100 (README, Speed): 120 epochs, 2.6 s an epoch per seed
with three side by side, 95.83% ± 0.02 per seed and 96.03% for the ensemble of the three.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fmnist.data import load_dataset
from fmnist.files import write_json
from fmnist.loop import History
from fmnist.metrics import mean_interval, softmax, wilson_interval
from fmnist.predict import Predictor
from fmnist.recipes import PRESETS

TRAIN_IMAGES = 60_000  # the official training set; `max` holds out its val_fraction (2%) to calibrate
CAL_ROWS = 15_000


def _train(seed: int, out: Path, width: int, epochs: int, extra: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fmnist", "train", "max", "--set", f"width={width}",
           "--epochs", str(epochs), "--seed", str(seed), "--out", str(out), "--quiet", "--overwrite", *extra]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait(procs: dict[int, subprocess.Popen], logs: dict[int, Path]) -> None:
    t0, left = time.perf_counter(), dict(procs)
    while left:  # report each seed when it ends: where the time goes is part of the measurement
        for seed, p in list(left.items()):
            if p.poll() is None:
                continue
            del left[seed]
            if p.returncode:
                sys.exit(f"seed {seed} failed (exit {p.returncode}):\n{logs[seed].read_text()[-3000:]}")
            print(f"  seed {seed} done after {time.perf_counter() - t0:.0f} s", flush=True)
        time.sleep(1)


def _run_all(seeds: list[int], root: Path, width: int, epochs: int, extra: list[str]) -> dict[int, Path]:
    dirs = {s: root / f"seed{s}" for s in seeds}
    logs = {s: root / f"seed{s}.log" for s in seeds}
    root.mkdir(parents=True, exist_ok=True)
    _wait({s: _train(s, dirs[s], width, epochs, extra, logs[s]) for s in seeds}, logs)
    return dirs


def _epoch_seconds(run: Path) -> float:
    return History.from_csv(run / "history.csv").seconds[-1]  # the last epoch: the first also pays CUDA's start-up


def _calibrated_epochs(args: argparse.Namespace, seeds: list[int], full_rows: int) -> int:
    """The most epochs whose training fits args.budget, from two epochs of the seeds side by side on 15,000 images."""
    t0 = time.perf_counter()
    cal = _run_all(seeds, args.out / "calibration", args.width, 2,
                   ["--device", args.device, "--limit", str(min(CAL_ROWS, args.limit or CAL_ROWS)), "--test-limit",
                    "500"])
    cal_rows = json.loads((cal[seeds[0]] / "config.json").read_text())["data"]["train_rows"]
    epoch_s = max(_epoch_seconds(d) for d in cal.values()) * full_rows / cal_rows
    epochs = max(args.min_epochs, min(args.max_epochs, math.floor(args.budget / epoch_s)))
    print(f"calibration ({time.perf_counter() - t0:.0f} s): {epoch_s:.2f} s an epoch on {full_rows:,} "
          f"images with {len(seeds)} side by side -> {epochs} epochs", flush=True)
    return epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the runs")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--budget", type=float, default=300.0, help="training seconds per seed (all seeds side by side)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, help="train this many epochs (no calibration run)")
    p.add_argument("--min-epochs", type=int, default=30)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--json", type=Path, help="also write the summary here")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    p.add_argument("--limit", type=int, help="only the first N training images (a dry run)")
    p.add_argument("--test-limit", type=int, help="only the first N test images (a dry run)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu_max.py: PyTorch sees no CUDA GPU (--device cpu for a dry run)", file=sys.stderr)
        sys.exit(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else args.device
    limits = ["--device", args.device]
    limits += ["--limit", str(args.limit)] if args.limit else []
    limits += ["--test-limit", str(args.test_limit)] if args.test_limit else []
    full_rows = round((1 - PRESETS["max"].config["val_fraction"]) * (args.limit or TRAIN_IMAGES))
    print(f"{gpu}, torch {torch.__version__}, seeds {seeds} side by side, width {args.width}", flush=True)

    epochs = args.epochs or _calibrated_epochs(args, seeds, full_rows)

    t1 = time.perf_counter()
    runs = _run_all(seeds, args.out, args.width, epochs, limits)
    wall = time.perf_counter() - t1
    metrics = {s: json.loads((d / "metrics.json").read_text()) for s, d in runs.items()}
    accs = [metrics[s]["test_accuracy"] for s in seeds]
    secs = [metrics[s]["train_seconds"] for s in seeds]
    for s in seeds:
        print(f"seed {s}: test {100 * metrics[s]['test_accuracy']:.2f}%  train {metrics[s]['train_seconds']:.0f} s")
    lo, hi = mean_interval(accs)

    ds = load_dataset(limit=100, test_limit=args.test_limit)  # the test split; the training rows are not needed
    probs = [softmax(Predictor.from_run(runs[s], device=args.device).logits(ds.test.images)) for s in seeds]
    correct = int((np.mean(probs, axis=0).argmax(1) == ds.test.labels).sum())
    n = len(ds.test.labels)
    elo, ehi = wilson_interval(correct, n)
    summary = {
        "gpu": gpu, "torch": torch.__version__, "width": args.width, "epochs": epochs, "seeds": seeds,
        "epochs_from": "--epochs" if args.epochs else f"calibration, budget {args.budget:g} s",
        "test_accuracy": accs, "train_seconds": secs, "wall_seconds_side_by_side": wall,
        "mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else None,
        "mean_interval": [lo, hi], "ensemble_accuracy": correct / n, "ensemble_interval": [elo, ehi],
    }
    print(f"mean {100 * summary['mean']:.2f}% (95% interval {100 * lo:.2f}-{100 * hi:.2f}, std "
          f"{100 * (summary['std'] or 0):.2f}) in {statistics.mean(secs):.0f} s of training each, {wall:.0f} s wall "
          f"for all {len(seeds)}; ensemble of the {len(seeds)}: {100 * correct / n:.2f}% "
          f"({100 * elo:.2f}-{100 * ehi:.2f})")
    if args.json:
        write_json(args.json, summary)


if __name__ == "__main__":
    main()
