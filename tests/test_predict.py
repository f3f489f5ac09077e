import numpy as np

import fmnist
from fmnist.cli import main


def test_predict_float_and_empty_npy(trained_run, tmp_path, small_ds, capsys):
    np.save(tmp_path / "f.npy", small_ds.test.images[:2] / 255.0)
    np.save(tmp_path / "e.npy", np.zeros((0, 784)))
    assert main(["predict", str(trained_run.dir), str(tmp_path / "f.npy"), str(tmp_path / "e.npy")]) == 2
    cap = capsys.readouterr()
    assert "f.npy: float pixels in 0..1, scaled to 0..255" in cap.err and "e.npy: holds no pixels" in cap.err
    assert cap.out.count("f.npy[") == 2


def test_predictor_from_a_run_gives_class_names_and_probabilities(trained_run, small_ds):
    pred = fmnist.Predictor.from_run(trained_run.dir)
    names = pred.predict(small_ds.test.images[:20])
    proba = pred.predict_proba(small_ds.test.images[:20])
    assert proba.shape == (20, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert names == [trained_run.class_names[i] for i in proba.argmax(1)]
    assert pred.predict(small_ds.test.images[:20] / 255.0) == names  # 0..1 floats: scaled, same answer
