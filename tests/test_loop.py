import json

import numpy as np
import pytest
import torch

from fmnist.config import TrainConfig
from fmnist.data import subset
from fmnist.loop import fit
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


def test_bf16_asked_for_where_it_is_emulated_says_so(small_ds, monkeypatch):
    import fmnist.loop

    monkeypatch.setattr(fmnist.loop, "native_bf16", lambda device: False)  # as on an AVX2-only CPU
    for precision, noted in (("bf16", True), ("auto", False), ("fp32", False)):
        lines = []
        cfg = TrainConfig(model="lenet5", epochs=1, batch_size=64, precision=precision)
        fit(create_model("lenet5"), subset(small_ds.train, 128), None, cfg, progress=False, log=lines.append)
        assert any("has no native bf16" in line and "--precision auto picks fp32" in line for line in lines) == noted


def test_early_stopping_restores_best(small_ds):
    cfg = TrainConfig(model="mlp_5x128", epochs=30, batch_size=64, lr=3e-2, patience=2)
    m = create_model("mlp_5x128")
    h = fit(m, small_ds.train, small_ds.test, cfg, progress=False, log=lambda *_: None)
    assert h.stopped_early and len(h.epoch) < 30
    assert h.best_epoch == int(np.argmin(h.val_loss)) + 1


@pytest.mark.slow
def test_resume_after_sigkill_continues_at_the_next_epoch_and_matches(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    args = [sys.executable, "-m", "fmnist", "train", "cnn_bn", "--limit", "2000", "--test-limit", "200",
            "--epochs", "3", "--batch-size", "64", "--augment", "crop,altflip", "--ema", "0.9", "--quiet"]
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


def test_whitening_stem_is_set_from_the_training_images(small_ds):
    from fmnist.data import to_input

    cfg = TrainConfig(model="resnet_fm_small", model_params={"stem": "whiten"}, epochs=1, batch_size=64, lr=0.05)
    m = create_model("resnet_fm_small", stem="whiten")
    fit(m, small_ds.train, None, cfg, progress=False, log=lambda *_: None)
    x = to_input(small_ds.train.images)
    w = m.stem.conv.weight
    assert not w.requires_grad and torch.allclose(w[:4], -w[4:])  # frozen, each direction with both signs
    y = torch.nn.functional.conv2d(m.stem._pad(x), w[:4]).transpose(0, 1).reshape(4, -1)
    cov = torch.cov(y.double())
    assert torch.allclose(cov, torch.eye(4, dtype=cov.dtype), atol=0.1)  # whitened: unit variance, decorrelated
