import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from fmnist.cli import main
from fmnist.data import subset
from fmnist.errors import FmnistError
from fmnist.evaluate import classification_metrics
from fmnist.models import create_model, list_models, model_info
from fmnist.train import TrainConfig, augment_batch, fit, load_checkpoint, lr_at, numpy_logits


def _make(name):
    # torchvision backbones build without downloading; EfficientNet-Lite0 uses its real offline weights
    kw = {"weights": "none"} if model_info(name).pretrained and name != "efficientnet_lite0_tl" else {}
    return create_model(name, **kw)


@pytest.mark.parametrize("name", list_models())
def test_every_model_shape_finite_and_gradients(name):
    torch.manual_seed(0)
    m = _make(name).train()
    x = torch.randn(4, 1, 28, 28)
    y = m(x)
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.tensor([0, 1, 2, 3])).backward()
    for pname, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_lenet5_has_seed_parameter_count():
    assert sum(p.numel() for p in create_model("lenet5").parameters()) == 44426


@pytest.mark.parametrize("act", ["relu", "tanh", "elu", "gelu"])
def test_pooling_before_a_monotone_activation_is_the_same_function(act):
    from fmnist.models import activation
    from fmnist.models.cnn import conv_act_pool

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 6, 5)
    layers = conv_act_pool(conv, act)
    pool_first = isinstance(layers[1], torch.nn.MaxPool2d)
    assert pool_first == (act != "gelu")  # GELU dips below zero: pooling first would change the function
    x = torch.randn(8, 1, 28, 28)
    textbook = torch.nn.Sequential(conv, activation(act), torch.nn.MaxPool2d(2))
    assert torch.equal(torch.nn.Sequential(*layers)(x), textbook(x))


def test_unknown_model_and_parameter_are_clear():
    with pytest.raises(FmnistError, match="known models: .*lenet5"):
        create_model("lenet6")
    with pytest.raises(FmnistError, match="no parameter widht"):
        create_model("lenet5_tuned", widht=3)
    with pytest.raises(FmnistError, match=r"parameter dense_units must be a whole number \(like its default 128\), "
                                          "got 'abc'"):
        create_model("lenet5_tuned", dense_units="abc")


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


def test_metrics_agree_with_sklearn(rng):
    y = rng.integers(0, 10, 500)
    logits = rng.normal(size=(500, 10)) + 3 * np.eye(10)[y] * (rng.random(500) < 0.7)[:, None]
    names = [str(i) for i in range(10)]
    m = classification_metrics(y, logits, names)
    pred = logits.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert (np.array(m["confusion_matrix"]) == skm.confusion_matrix(y, pred, labels=range(10))).all()
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(10), zero_division=0)
    assert [m["per_class"][n]["f1"] for n in names] == pytest.approx(f)
    assert [m["per_class"][n]["precision"] for n in names] == pytest.approx(p)
    assert [m["per_class"][n]["recall"] for n in names] == pytest.approx(r)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert m["loss"] == pytest.approx(skm.log_loss(y, probs, labels=range(10)))


def test_train_cli_run_round_trips_and_predicts(tmp_path, small_ds, capsys):
    out = tmp_path / "run"
    assert main(["train", "cnn_basic", "--limit", "400", "--test-limit", "200", "--epochs", "1",
                 "--set", "dense_units=64", "--out", str(out), "--quiet"]) == 0
    for f in ("config.json", "history.csv", "metrics.json", "model.safetensors", "learning_curves.png",
              "confusion_matrix.png", "misclassified.png"):
        assert (out / f).exists(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and len(metrics["confusion_matrix"]) == 10
    assert json.loads((out / "config.json").read_text())["model_params"] == {"dense_units": 64}
    model, meta = load_checkpoint(out)
    assert meta["model"] == "cnn_basic"
    logits = numpy_logits(model, small_ds.test.images[:200])
    assert (logits.argmax(1) == small_ds.test.labels[:200]).mean() == pytest.approx(metrics["test_accuracy"])
    # predict on a PNG, a .npy and a CSV row; an unreadable file is reported and the rest still predicted
    from PIL import Image
    Image.fromarray(255 - small_ds.test.images[0]).resize((90, 90)).convert("RGB").save(tmp_path / "photo.png")
    np.save(tmp_path / "x.npy", small_ds.test.images[:2])
    (tmp_path / "rows.csv").write_text(",".join(map(str, small_ds.test.images[3].reshape(-1))) + "\n")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    capsys.readouterr()
    rc = main(["predict", str(out), str(tmp_path / "photo.png"), str(tmp_path / "bad.png"),
               str(tmp_path / "x.npy"), str(tmp_path / "rows.csv"), "--json"])
    cap = capsys.readouterr()
    assert rc == 2 and "bad.png: not a readable image" in cap.err
    preds = json.loads(cap.out)
    assert len(preds) == 4 and all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in preds)


def test_train_a_preset_by_name(tmp_path, capsys):
    import json

    from fmnist.cli import main

    out = tmp_path / "run"
    assert main(["train", "fast", "--epochs", "1", "--limit", "300", "--test-limit", "100", "--out", str(out),
                 "--quiet"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "resnet_fm_small" and cfg["tta"] and cfg["epochs"] == 1  # the option beats the preset
    assert cfg["val_fraction"] == 0 and cfg["data"]["train_rows"] == 300 and cfg["data"]["val_rows"] == 0
    assert 0 <= json.loads((out / "metrics.json").read_text())["test_accuracy"] <= 1
    capsys.readouterr()
    assert main(["train", "lenet5", "--preset", "nope", "--limit", "100", "--out", str(tmp_path / "x")]) == 2
    assert "preset 'nope' unknown; choose from fast, best, max" in capsys.readouterr().err
    assert main(["train", "fast", "--patience", "2", "--limit", "100", "--out", str(tmp_path / "y")]) == 2
    assert "patience (early stopping) needs a validation split" in capsys.readouterr().err


def test_checkpoint_of_another_layout_is_refused_by_name(tmp_path):
    # resnet_fm's blocks were conv-BN-act-pool (keys stages.N.conv.0/1) before they became conv-pool-BN-act
    from safetensors import safe_open
    from safetensors.torch import save_file

    from fmnist.train import save_checkpoint

    m = create_model("resnet_fm_small")
    new = save_checkpoint(m, tmp_path / "new.safetensors", TrainConfig(model="resnet_fm_small"), tuple("abcdefghij"))
    assert load_checkpoint(new)[1]["model"] == "resnet_fm_small"
    with safe_open(str(new), framework="pt") as f:
        meta = f.metadata()
    old = {k.replace(".conv.weight", ".conv.0.weight").replace(".norm.", ".conv.1."): v.contiguous()
           for k, v in m.state_dict().items()}
    save_file(old, str(tmp_path / "old.safetensors"), metadata=meta)
    with pytest.raises(FmnistError, match=r"old\.safetensors: weights do not fit model 'resnet_fm_small' "
                                          r"\(Missing key\(s\) in state_dict: \"stages\.0\.conv\.weight\""):
        load_checkpoint(tmp_path / "old.safetensors")


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
