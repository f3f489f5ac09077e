import json
import os
import signal
import subprocess
import sys

import optuna
import pytest

from fmnist.cli import main


def _cv_args(out, *extra):
    return ["cv", "lenet5", "--folds", "3", "--limit", "600", "--test-limit", "100", "--epochs", "3",
            "--out", str(out), "--quiet", *extra]


@pytest.mark.slow
def test_cv_sigint_stops_after_the_current_fold_and_a_rerun_finishes(tmp_path, capsys):
    out = tmp_path / "cv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "fmnist", *_cv_args(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in p.stdout:  # interrupt as soon as the first fold starts (folds run in a shuffled order)
        lines.append(line)
        if line.startswith("fold "):
            p.send_signal(signal.SIGINT)
            break
    lines += p.stdout.readlines()
    assert p.wait(timeout=120) == 130, "".join(lines)
    text = "".join(lines)
    assert "stopping after the current trial" in text and "run the same command again" in text
    assert "Traceback" not in text and not (out / "cv.json").exists()
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'cv.db'}")
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 1 <= len(finished) < 3 and not [t for t in study.trials if t.state.name == "RUNNING"]

    capsys.readouterr()
    assert main(_cv_args(out)) == 0  # resumes: only the missing folds run
    log = capsys.readouterr().out
    assert f"{len(finished)} of 3 folds finished earlier" in log
    assert log.count(": 400 train / 200 validation images") == 3 - len(finished)
    s = json.loads((out / "cv.json").read_text())
    assert [r["fold"] for r in s["per_fold"]] == [1, 2, 3]
    assert 0 <= s["val_accuracy"]["mean"] <= 1 and s["val_accuracy"]["std"] >= 0 and s["test_accuracy"]["n"] == 3
    assert (out / "fold_curves.png").exists() and (out / "fold_metrics.png").exists()


def test_repeated_cv_runs_each_fold_of_each_repeat_once(tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["cv", "lenet5", "--folds", "2", "--repeats", "2", "--limit", "300", "--test-limit", "100",
                 "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "cv.json").read_text())
    assert [(r["repeat"], r["fold"]) for r in s["per_fold"]] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert "1.2" in capsys.readouterr().out and s["repeats"] == 2
    # the same command with other settings is a different study, not a clash
    assert main(["cv", "lenet5", "--folds", "2", "--limit", "300", "--test-limit", "100", "--epochs", "1",
                 "--lr", "0.01", "--out", str(out), "--quiet"]) == 0
