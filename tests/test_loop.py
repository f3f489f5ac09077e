import json

import numpy as np
import pytest
import torch

from fmnist.config import TrainConfig
from fmnist.data import subset
from fmnist.loop import augment_batch, fit, lr_at
from fmnist.models import create_model


def test_one_epoch_lowers_loss_and_is_deterministic(small_ds):
    cfg = TrainConfig(model="lenet5", epochs=2, batch_size=32, lr=2e-3, seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        m = create_model("lenet5")
        h = fit(m, small_ds.train, subset(small_ds.test, 100), cfg, progress=False, log=lambda *_: None)
        runs.append(h)
    assert runs[0].train_loss[1] < runs[0].train_loss[0]
    assert runs[0].train_loss == runs[1].train_loss and runs[0].val_loss == runs[1].val_loss


def test_early_stopping_restores_best(small_ds):
    cfg = TrainConfig(model="mlp_tyler", epochs=30, batch_size=64, lr=3e-2, patience=2)
    m = create_model("mlp_tyler")
    h = fit(m, small_ds.train, small_ds.test, cfg, progress=False, log=lambda *_: None)
    assert h.stopped_early and len(h.epoch) < 30
    assert h.best_epoch == int(np.argmin(h.val_loss)) + 1


def test_schedules_and_augmentation():
    cfg = TrainConfig(lr=1.0, schedule="onecycle")
    lrs = [lr_at(s, 100, cfg, 10) for s in range(100)]
    assert max(lrs) == pytest.approx(1.0, abs=0.05) and lrs[-1] < 0.02 and lrs[0] < 0.1
    cfg = TrainConfig(lr=1.0, schedule="cosine")
    assert lr_at(0, 100, cfg, 10) == 1.0 and lr_at(99, 100, cfg, 10) < 0.01
    x = torch.randn(16, 1, 28, 28)
    out = augment_batch(x, ["crop", "flip", "rotate", "erase"], torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.equal(out, x)


def test_resume_after_sigkill_continues_at_the_next_epoch_and_matches(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    args = [sys.executable, "-m", "fmnist", "train", "cnn_bn", "--limit", "2000", "--test-limit", "200",
            "--epochs", "3", "--batch-size", "64", "--augment", "crop,flip", "--ema", "0.9", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(args + ["--out", str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env)
    lines = []
    for line in p.stdout:  # the epoch line is printed once its state is on disk: kill -9 right then
        lines.append(line)
        if line.startswith("epoch   1/3"):
            p.send_signal(signal.SIGKILL)
            break
    assert p.wait(timeout=60) == -signal.SIGKILL, "".join(lines)
    assert (tmp_path / "a" / "train_state.pt").exists() and not (tmp_path / "a" / "metrics.json").exists()
    # a plain rerun is refused; a resume with other settings is refused and names the setting
    r = subprocess.run(args + ["--out", str(tmp_path / "a")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "give --overwrite to replace it, --resume to continue it" in r.stderr
    r = subprocess.run(args + ["--out", str(tmp_path / "a"), "--resume", "--lr", "0.01"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2 and "started with other settings (lr=0.0001)" in r.stderr
    r = subprocess.run(args + ["--out", str(tmp_path / "a"), "--resume"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "resuming at epoch 2/3" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "a" / "train_state.pt").exists()  # complete: the state file is gone
    r = subprocess.run(args + ["--out", str(tmp_path / "b")], capture_output=True, text=True, env=env)
    assert r.returncode == 0
    a, b = ((tmp_path / d / "history.csv").read_text().splitlines() for d in ("a", "b"))
    drop_seconds = [[c for i, c in enumerate(line.split(",")) if i != 5] for line in a], \
        [[c for i, c in enumerate(line.split(",")) if i != 5] for line in b]
    assert len(a) == 4 and drop_seconds[0] == drop_seconds[1]  # the same losses and accuracies, epoch by epoch
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    assert ma["test_accuracy"] == mb["test_accuracy"] and ma["epochs_run"] == 3
