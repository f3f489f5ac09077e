"""Scale-out benchmark: trials per minute of one shared `fmnist tune` study with 1, 2, ... workers.

    python benchmarks/scale.py --storage postgresql://user:pass@host/db [--workers 1,2] [--trials 8]

For each worker count W, starts W `fmnist tune` processes on a new study in the storage, each with
OMP_NUM_THREADS = cores / W (workers on one machine share its cores), waits for all of them, and prints the
study's finished trials per minute of wall time (JSON with --json). Every run must end with exactly --trials
finished trials; the script checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState


def run(storage: str, workers: int, trials: int, extra: list[str]) -> dict:
    name = f"scale-{workers}w-{int(time.time())}"
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "fmnist", "tune", "lenet5", "--space", "lr-wd", "--sampler", "random", "--trials",
           str(trials), "--storage", storage, "--study-name", name, "--no-retrain", "--quiet", *extra]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--out", f"/tmp/fmnist-scale/{name}-{i}"], env=env, stdout=subprocess.DEVNULL)
             for i in range(workers)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=storage)
    finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if any(codes) or finished != trials:
        raise SystemExit(f"{workers} worker(s): exit codes {codes}, {finished} finished trials (wanted {trials})")
    return {"workers": workers, "threads_per_worker": threads, "trials": finished, "seconds": wall,
            "trials_per_minute": 60 * finished / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", required=True, help="Optuna storage URL (PostgreSQL)")
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts (default 1,2)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--limit", type=int, default=6000, help="training rows per trial (default 6000)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    extra = ["--limit", str(a.limit), "--test-limit", "100", "--epochs", str(a.epochs)]
    rows = [run(a.storage, int(w), a.trials, extra) for w in a.workers.split(",")]
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['workers']} worker(s) x {r['threads_per_worker']} thread(s): {r['trials']} trials in "
                  f"{r['seconds']:.1f} s = {r['trials_per_minute']:.1f} trials/min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
