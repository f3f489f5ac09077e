import numpy as np

from fmnist.cli import main
from fmnist.predict import Predictor


def test_onnx_export_agrees_with_pytorch(trained_run, small_ds, tmp_path):
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(trained_run.dir, run_dir)  # export writes into the run: a copy keeps the shared run intact
    assert main(["export", str(run_dir), "--test-limit", "200", "--check", "200"]) == 0
    a = Predictor(run_dir).predict_proba(small_ds.test.images[:200])
    b = Predictor(run_dir, backend="onnx").predict_proba(small_ds.test.images[:200])
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.999 and np.abs(a - b).max() < 1e-3


def test_export_into_an_existing_directory(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run.dir), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "model.onnx").exists() and f"wrote {tmp_path / 'model.onnx'}" in capsys.readouterr().out
    (tmp_path / "f").write_text("x")
    assert main(["export", str(trained_run.dir), "--out", str(tmp_path / "f" / "m.onnx")]) == 2
    assert "is not a directory" in capsys.readouterr().err
