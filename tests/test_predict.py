import json

import numpy as np
import pytest

import fmnist
from fmnist.cli import main


def test_predict_float_and_empty_npy(trained_run, tmp_path, small_ds, capsys):
    np.save(tmp_path / "f.npy", small_ds.test.images[:2] / 255.0)
    np.save(tmp_path / "e.npy", np.zeros((0, 784)))
    assert main(["predict", str(trained_run.dir), str(tmp_path / "f.npy"), str(tmp_path / "e.npy")]) == 2
    cap = capsys.readouterr()
    assert "f.npy: float pixels in 0..1, scaled to 0..255" in cap.err and "e.npy: holds no pixels" in cap.err
    assert cap.out.count("f.npy[") == 2


def test_predict_an_empty_file_or_an_npz_is_one_line_each(trained_run, tmp_path, small_ds, capsys):
    (tmp_path / "z.npy").write_bytes(b"")
    np.savez(tmp_path / "d.npz", x_train=small_ds.test.images[:2], y_train=small_ds.test.labels[:2])
    (tmp_path / "a.npy").write_bytes((tmp_path / "d.npz").read_bytes())  # an archive under an array's name
    assert main(["predict", str(trained_run.dir), *(str(tmp_path / f) for f in ("z.npy", "d.npz", "a.npy"))]) == 2
    err = capsys.readouterr().err
    assert "z.npy: not a readable .npy file (No data left in file)" in err
    assert "d.npz: predict reads images, .npy or .csv files; to score a dataset (.npz) use `fmnist evaluate" in err
    assert "a.npy: an .npz archive, not an .npy array" in err and "Traceback" not in err


def test_predictor_from_a_run_gives_class_names_and_probabilities(trained_run, small_ds):
    pred = fmnist.Predictor.from_run(trained_run.dir)
    names = pred.predict(small_ds.test.images[:20])
    proba = pred.predict_proba(small_ds.test.images[:20])
    assert proba.shape == (20, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert names == [trained_run.class_names[i] for i in proba.argmax(1)]
    assert pred.predict(small_ds.test.images[:20] / 255.0) == names  # 0..1 floats: scaled, same answer


def _make_photo():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "photos.py"
    spec = importlib.util.spec_from_file_location("photos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_photo


def test_dataset_images_as_files_pass_through_unchanged(trained_run, small_ds, tmp_path, capsys):
    from PIL import Image

    from fmnist.predict import image_to_array

    files = []
    for i in range(20):
        Image.fromarray(small_ds.test.images[i]).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
        assert (image_to_array(tmp_path / f"{i}.png") == small_ds.test.images[i]).all()
    np.save(tmp_path / "x.npy", small_ds.test.images[:20])
    assert main(["predict", str(trained_run.dir), *files, "--json"]) == 0
    from_png = [p["label"] for p in json.loads(capsys.readouterr().out)]
    assert main(["predict", str(trained_run.dir), str(tmp_path / "x.npy"), "--json"]) == 0
    assert from_png == [p["label"] for p in json.loads(capsys.readouterr().out)]


def test_product_photos_are_prepared_as_the_dataset_was(small_ds):
    from fmnist.predict import image_to_array

    make_photo = _make_photo()
    rng = np.random.default_rng(0)
    dataset, fit = [], []
    for x in small_ds.test.images[:40]:
        photo = make_photo(x, rng)  # dark article on a light canvas, anywhere, JPEG
        for mode, out in (("dataset", dataset), ("fit", fit)):
            seen = image_to_array(photo, preprocess=mode).astype(float)
            out.append(np.corrcoef(seen.ravel(), x.astype(float).ravel())[0, 1])
    # the prepared photo looks like the image it was made from; fitting the whole canvas does not
    assert np.median(dataset) > 0.9 and np.median(fit) < 0.6, (np.median(dataset), np.median(fit))


def test_preprocess_modes_and_bad_values(tmp_path):
    from PIL import Image

    from fmnist.errors import DataError
    from fmnist.predict import image_to_array

    canvas = np.full((120, 200), 235, np.uint8)
    canvas[30:90, 80:110] = 40  # a dark article on a light background
    Image.fromarray(canvas).save(tmp_path / "p.png")
    d = image_to_array(tmp_path / "p.png")  # trimmed: the article's longest edge fills the 28 rows
    assert d[:, 14].min() > 0 and (d[0] > 0).any() and (d[-1] > 0).any()
    f = image_to_array(tmp_path / "p.png", preprocess="fit")  # the whole canvas: the article is small
    assert (f > 100).sum() < (d > 100).sum() / 4  # (fit keeps the grey background too)
    assert image_to_array(tmp_path / "p.png", preprocess="none").shape == (28, 28)
    with pytest.raises(DataError, match="preprocess 'crop' unknown"):
        image_to_array(tmp_path / "p.png", preprocess="crop")
    empty = np.full((60, 60), 250, np.uint8)  # nothing stands out: a blank 28x28, no error
    Image.fromarray(empty).save(tmp_path / "e.png")
    assert image_to_array(tmp_path / "e.png").max() == 0


def test_unusual_pictures_get_a_warning(trained_run, small_ds):
    pred = fmnist.Predictor.from_run(trained_run.dir)
    ood = pred.meta["ood"]
    assert ood["quantile"] == 0.99 and ood["calibrated_on"].startswith("validation split")
    test_flags = [w is not None for w in pred.warnings(small_ds.test.images)]
    assert np.mean(test_flags) < 0.05  # calibrated for 1% false alarms on held-out images
    blank = np.zeros((1, 28, 28), np.uint8)
    assert "nothing stands out" in pred.warnings(blank)[0]
    p = pred.predictions(blank, ["blank"])[0]
    assert p.warning and p.label in pred.class_names  # still a label, but said to mean little


def test_predictions_carry_calibrated_probabilities_and_sets(trained_run, small_ds, tmp_path, capsys):
    from fmnist.metrics import softmax

    pred = fmnist.Predictor.from_run(trained_run.dir)
    x = small_ds.test.images[:50]
    t = pred.calibration.temperature
    assert np.allclose(pred.predict_proba(x), softmax(pred.logits(x) / t))
    sets = pred.predict_set(x)
    assert all(p in s for p, s in zip(pred.predict(x), sets, strict=True) if s)  # a set holds the top class
    np.save(tmp_path / "x.npy", x[:3])
    assert main(["predict", str(trained_run.dir), str(tmp_path / "x.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["set"] for o in out] == sets[:3]
    assert main(["predict", str(trained_run.dir), str(tmp_path / "x.npy")]) == 0
    assert "90% set: " in capsys.readouterr().out  # "Shirt or T-shirt/top", or "none" when no class is sure enough


def test_explain_command_writes_a_heatmap_per_image(trained_run, small_ds, tmp_path, capsys):
    np.save(tmp_path / "x.npy", small_ds.test.images[:2])
    assert main(["explain", str(trained_run.dir), str(tmp_path / "x.npy"), "--out", str(tmp_path / "ex")]) == 0
    written = sorted(p.name for p in (tmp_path / "ex").iterdir())
    assert written == ["x.npy_0_.explain.png", "x.npy_1_.explain.png"] and "->" in capsys.readouterr().out
    assert main(["explain", str(trained_run.dir), str(tmp_path / "nope.png"), "--out", str(tmp_path / "e2")]) == 2
    assert "nope.png: no such file" in capsys.readouterr().err and not (tmp_path / "e2").exists()
