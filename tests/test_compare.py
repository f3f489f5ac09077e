import json

import numpy as np
import pytest
from scipy.stats import binomtest

import fmnist
from fmnist.cli import main


@pytest.fixture(scope="module")
def second_run(small_ds, tmp_path_factory):
    return fmnist.train("lenet5", small_ds, tmp_path_factory.mktemp("second") / "run", epochs=1, progress=False,
                        log=lambda *_: None)


def test_compare_two_runs_on_the_same_test_images(trained_run, second_run, small_ds, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(trained_run.dir), str(second_run.dir), "--out", str(out)]) == 0
    r = json.loads((out / "compare.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    (pair,) = r["pairs"]
    a = np.load(trained_run.dir / "test_predictions.npz")["predicted"] == small_ds.test.labels
    b = np.load(second_run.dir / "test_predictions.npz")["predicted"] == small_ds.test.labels
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    assert (pair["only_a"], pair["only_b"]) == (only_a, only_b)
    assert pair["accuracy_difference"] == pytest.approx(a.mean() - b.mean())
    assert pair["p_value"] == pytest.approx(binomtest(only_a, only_a + only_b).pvalue)
    assert pair["ci95"][0] <= pair["accuracy_difference"] <= pair["ci95"][1]
    assert r["config_differences"]["model"] == ["cnn_basic", "lenet5"]
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "McNemar p =" in capsys.readouterr().out


def test_runs_on_other_test_sets_are_refused(trained_run, small_ds, tmp_path, capsys):
    import dataclasses

    other = dataclasses.replace(small_ds, test=small_ds.test.take(np.arange(100)))
    run = fmnist.train("lenet5", other, tmp_path / "other", epochs=1, progress=False, log=lambda *_: None)
    assert main(["compare", str(trained_run.dir), str(run.dir)]) == 2
    assert "tested on different test sets" in capsys.readouterr().err


def test_runs_lists_run_directories(trained_run, second_run, capsys):
    root = trained_run.dir.parent.parent  # both runs' temporary directories share this parent
    assert main(["runs", str(root), "--json"]) == 0
    listed = {r["dir"]: r for r in json.loads(capsys.readouterr().out)}
    assert str(trained_run.dir) in listed and str(second_run.dir) in listed
    assert listed[str(trained_run.dir)]["test_accuracy"] == trained_run.metrics.test_accuracy
    assert main(["runs", str(root), "--sort", "model"]) == 0
    assert "cnn_basic" in capsys.readouterr().out
