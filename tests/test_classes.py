"""Datasets of other class counts end to end, as a user brings them: train, calibrate, find label issues, export,
predict and serve, with their own class names everywhere."""

import io
import json

import numpy as np
import pytest
from conftest import glyphs
from PIL import Image

from fmnist.cli import main

LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
BALANCED = [*"0123456789", *[chr(c) for c in range(ord("A"), ord("Z") + 1)], *"abdefghnqrt"]  # EMNIST's 47


@pytest.mark.slow
@pytest.mark.parametrize("names", [LETTERS, BALANCED], ids=["26 classes", "47 classes"])
def test_a_dataset_of_many_classes_trains_calibrates_finds_label_issues_exports_and_serves(names, tmp_path,
                                                                                          capsys):
    k = len(names)
    x, y = glyphs(k, 40)
    xt, yt = glyphs(k, 8, seed=1)
    y = y.copy()
    wrong = np.arange(k) * 40  # the first image of every class gets the next class's label: issues to find
    y[wrong] = (y[wrong] + 1) % k
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "glyphs.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    (data / "classes.txt").write_text("\n".join(names))
    run = tmp_path / "run"
    assert main(["train", "cnn_basic", "--data", str(data / "glyphs.npz"), "--epochs", "8", "--lr", "3e-3",
                 "--schedule", "onecycle", "--val-fraction", "0.25", "--quiet", "--out", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["test_accuracy"] > 0.8 and list(m["per_class"]) == names  # chance is 1/k
    assert m["calibration"]["temperature"] > 0 and m["conformal"]["coverage"] > 0.8
    assert (run / "confusion_matrix.png").stat().st_size > 20_000

    assert main(["labels", "cnn_basic", "--data", str(data / "glyphs.npz"), "--folds", "2", "--epochs", "6",
                 "--lr", "3e-3", "--schedule", "onecycle", "--out", str(tmp_path / "labels")]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "labels" / "label_issues.csv")
    found = set(table[table.split == "train"]["index"]) & set(wrong)
    assert len(found) >= k // 2 and set(table["given_name"]) <= set(names)

    assert main(["export", str(run), "--limit", "100", "--test-limit", "50", "--data", str(data / "glyphs.npz")]) == 0
    Image.fromarray(xt[-1]).save(tmp_path / "last.png")
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "last.png"), "--backend", "onnx", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    answer = answer[0] if isinstance(answer, list) else answer
    assert answer["label"] == names[-1] and len(answer["probabilities"]) == k

    from fastapi.testclient import TestClient

    from fmnist.serve import create_app

    with TestClient(create_app(run), base_url="http://127.0.0.1") as client:
        card = client.get("/model").json()
        assert card["classes"] == names and card["fashion"] is False
        buf = io.BytesIO()
        Image.fromarray(xt[0]).save(buf, format="PNG")
        r = client.post("/predict", files={"file": ("g.png", buf.getvalue(), "image/png")}).json()
        assert r["label"] == names[0] and set(r["probabilities"]) == set(names)
        assert "<title>fmnist: classify 28×28 pictures</title>" in client.get("/").text  # named from /model


def test_345_classes_train_and_draw(tmp_path):
    x, y = glyphs(345, 4)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[::4], y_test=y[::4])
    assert main(["train", "lenet5", "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--val-fraction", "0",
                 "--quiet", "--out", str(tmp_path / "run")]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(m["per_class"]) == 345 and len(m["confusion_matrix"]) == 345
    assert (tmp_path / "run" / "confusion_matrix.png").stat().st_size > 20_000
