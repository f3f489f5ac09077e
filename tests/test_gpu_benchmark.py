"""benchmarks/gpu_max.py on a tiny setting, on the CPU (its --device cpu dry run): it runs, its numbers are real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_max.py"
SRC = str(Path(__file__).parent.parent / "src")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_calibrates_epochs_trains_seeds_side_by_side_and_scores_their_ensemble(tmp_path):
    summary = tmp_path / "summary.json"
    r = _run("--out", str(tmp_path / "runs"), "--device", "cpu", "--limit", "600", "--test-limit", "200",
             "--width", "4", "--seeds", "0,1", "--budget", "0.1", "--min-epochs", "1", "--max-epochs", "2",
             "--json", str(summary))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "calibration" in r.stdout and "seed 1 done after" in r.stdout
    s = json.loads(summary.read_text())
    assert s["epochs"] == 1 and s["seeds"] == [0, 1]  # a 0.1-s budget: the floor of 1 epoch
    for seed, acc in zip(s["seeds"], s["test_accuracy"], strict=True):
        metrics = json.loads((tmp_path / "runs" / f"seed{seed}" / "metrics.json").read_text())
        assert acc == metrics["test_accuracy"] and metrics["epochs_run"] == 1
        assert json.loads((tmp_path / "runs" / f"seed{seed}" / "config.json").read_text())["model_params"]["width"] == 4
    assert 0 <= s["ensemble_accuracy"] <= 1 and s["ensemble_interval"][0] <= s["ensemble_accuracy"]
    assert min(s["test_accuracy"]) - 1e-9 <= s["mean"] <= max(s["test_accuracy"]) + 1e-9


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    r = _run("--out", str(tmp_path / "runs"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no CUDA GPU" in r.stderr
    assert not (tmp_path / "runs").exists()
