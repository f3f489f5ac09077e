import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from fmnist.cli import main
from fmnist.config import TrainConfig
from fmnist.data import Split, load_dataset
from fmnist.labels import find_label_issues


@pytest.mark.slow
def test_label_finder_flags_corrupted_labels(tmp_path):
    ds = load_dataset(limit=1500, test_limit=400)
    rng = np.random.default_rng(0)
    # trousers, bags and sandals relabelled as classes they look nothing like: errors any decent model sees
    def corrupt(split, n):
        idx = rng.choice(np.flatnonzero(np.isin(split.labels, [1, 8, 5])), n, replace=False)
        labels = split.labels.copy()
        labels[idx] = np.select([labels[idx] == 1, labels[idx] == 8], [9, 0], 3)
        return Split(split.images, labels), idx

    train, bad_train = corrupt(ds.train, 40)
    test, bad_test = corrupt(ds.test, 12)
    noisy = dataclasses.replace(ds, train=train, test=test)
    config = TrainConfig.for_model("cnn_basic", epochs=6, lr=3e-3, schedule="onecycle", val_fraction=0.1)
    r = find_label_issues(config, noisy, tmp_path / "labels", folds=3, retrain=True, progress=False,
                          log=lambda *_: None)
    table = pd.read_csv(tmp_path / "labels" / "label_issues.csv")
    assert {"split", "index", "given", "suggested", "score"} <= set(table.columns)
    assert (np.diff(table["score"].to_numpy()) <= 1e-9).all()  # most likely first
    flagged_train = set(table[table.split == "train"]["index"])
    flagged_test = set(table[table.split == "test"]["index"])
    assert len(flagged_train & set(bad_train)) >= 0.75 * len(bad_train)
    # the test split's 400 rows give confident learning less to estimate the noise from: most, not all
    assert len(flagged_test & set(bad_test)) >= 0.5 * len(bad_test)
    # ranked: the corrupted rows (given a class they look nothing like) score above the other suspects (the
    # real data's own doubtful labels and a small model's confusions)
    tr = table[table.split == "train"]
    assert tr[tr["index"].isin(bad_train)]["score"].median() > tr[~tr["index"].isin(bad_train)]["score"].median()
    # the suggestion for a flagged corrupted row is mostly its true class
    hits = table[(table.split == "train") & table["index"].isin(bad_train)]
    assert (hits["suggested"].to_numpy() == ds.train.labels[hits["index"].to_numpy()]).mean() > 0.8
    summary = json.loads((tmp_path / "labels" / "summary.json").read_text())
    assert summary["train_suspects"] == r.train_suspects == len(flagged_train)
    assert summary["retrained"]["rows_dropped"] == r.train_suspects
    assert r.test_errors_on_suspects >= 0.5 * len(bad_test)  # the corrupted test labels count as model errors
    assert (tmp_path / "labels" / "suspects.png").stat().st_size > 10_000


def test_labels_command_refuses_bad_folds(capsys):
    assert main(["labels", "cnn_basic", "--folds", "1"]) == 2
    assert "--folds must be at least 2" in capsys.readouterr().err


def test_without_the_labels_extra_labels_stops_before_training(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "cleanlab", None)  # as if not installed
    assert main(["labels", "lenet5", "--limit", "200", "--out", str(tmp_path / "l")]) == 2
    assert "pip install 'fmnist[labels]'" in capsys.readouterr().err and not (tmp_path / "l" / "cv").exists()
