import numpy as np

from fmnist.cli import main
from fmnist.export import int8_saturates
from fmnist.predict import Predictor


def test_onnx_export_agrees_with_pytorch(trained_run, small_ds, tmp_path):
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(trained_run.dir, run_dir)  # export writes into the run: a copy keeps the shared run intact
    assert main(["export", str(run_dir), "--test-limit", "200", "--check", "200"]) == 0
    a = Predictor(run_dir).predict_proba(small_ds.test.images[:200])
    b = Predictor(run_dir, backend="onnx").predict_proba(small_ds.test.images[:200])
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.999 and np.abs(a - b).max() < 1e-3
    # the file alone gives calibrated probabilities: the run's temperature is inside it
    import onnxruntime as ort

    session = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = ((small_ds.test.images[:200, None] / 255.0 - 0.2860) / 0.3530).astype(np.float32)
    assert np.abs(session.run(["probabilities"], {"input": x})[0] - a).max() < 1e-3


def test_export_into_an_existing_directory(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run.dir), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "model.onnx").exists() and f"wrote {tmp_path / 'model.onnx'}" in capsys.readouterr().out
    (tmp_path / "f").write_text("x")
    assert main(["export", str(trained_run.dir), "--out", str(tmp_path / "f" / "m.onnx")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_int8_export_compares_with_fp32_and_serves(trained_run, small_ds, tmp_path, capsys):
    import json
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.dir, run_dir)
    assert main(["export", str(run_dir), "--quantize", "int8", "--limit", "200", "--test-limit", "300",
                 "--check", "0", "--calibration-images", "128"]) == 0
    out = capsys.readouterr().out
    assert "model.int8.onnx" in out and "batch-1 latency" in out
    r = json.loads((run_dir / "int8.json").read_text())
    assert r["n"] == 300 and abs(r["accuracy_drop_points"]) < 5 and r["int8"]["megabytes"] < r["fp32"]["megabytes"]
    p = Predictor(run_dir, backend="onnx")
    assert p.onnx.path.name == "model.int8.onnx"
    int8, fp32 = p.predict_proba(small_ds.test.images), Predictor(run_dir).predict_proba(small_ds.test.images)
    top2 = np.sort(fp32, axis=1)[:, -2:]
    agree = int8.argmax(1) == fp32.argmax(1)
    # with the weight bits chosen for this CPU, rounding moves this 2-epoch model's probabilities by 0.03 at most
    # (7 bits on an AVX2 CPU; 8 bits there moved them by up to 0.19 and changed 25 of the 300 answers): only the
    # images fp32 nearly ties may change class
    assert np.abs(int8 - fp32).mean() < 0.01 and agree[top2[:, 1] - top2[:, 0] > 0.2].all() and agree.mean() > 0.95
    assert r["weight_bits"] == (7 if int8_saturates() else 8) and f"{r['weight_bits']}-bit weights, as this CPU" in out
    assert main(["export", str(run_dir), "--format", "torchscript", "--quantize", "int8"]) == 2
    assert main(["export", str(run_dir), "--weight-bits", "7"]) == 2
    assert "--weight-bits applies only with --quantize int8" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--quantize", "int8", "--weight-bits", "7", "--limit", "200", "--test-limit",
                 "50", "--check", "0", "--calibration-images", "64"]) == 0
    assert "7-bit weights;" in capsys.readouterr().out and json.loads((run_dir / "int8.json").read_text())[
        "weight_bits"] == 7
    assert Predictor(run_dir, backend="onnx").onnx.warning is None
    assert main(["export", str(run_dir), "--quantize", "int8", "--weight-bits", "8", "--limit", "200", "--test-limit",
                 "50", "--check", "0", "--calibration-images", "64"]) == 0
    warning = Predictor(run_dir, backend="onnx").onnx.warning  # 8-bit weights warn only where they saturate
    assert (warning is not None and "8-bit int8 weights on a CPU without VNNI" in warning) == int8_saturates()


def test_the_fast_preset_exports_and_its_onnx_predictions_average_the_same_ten_views(small_ds, tmp_path):
    import fmnist

    run = fmnist.train("fast", small_ds, tmp_path / "fast", epochs=1, progress=False, log=lambda *_: None)
    assert run.config.model_params == {"stem": "whiten"} and run.config.tta_views == "flip+shifts"
    assert main(["export", str(run.dir), "--test-limit", "100", "--check", "100"]) == 0
    a = Predictor(run.dir).logits(small_ds.test.images[:100])
    b = Predictor(run.dir, backend="onnx").logits(small_ds.test.images[:100])
    assert np.abs(a - b).max() < 1e-3  # the whitening stem exports; both paths average the 10 views
