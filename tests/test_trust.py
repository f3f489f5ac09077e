import json

import numpy as np
import pytest

from fmnist import trust
from fmnist.metrics import softmax


def _overconfident(rng, n, classes=10, scale=3.0):
    """Logits of a model that is right ~80% of the time but claims more: true-class evidence times `scale`."""
    y = rng.integers(0, classes, n)
    z = rng.normal(size=(n, classes))
    right = rng.random(n) < 0.8
    z[np.arange(n), np.where(right, y, (y + 1) % classes)] += 2.0
    return z * scale, y


def test_ece_known_values():
    # every prediction 90% sure and right 90% of the time: calibrated; 90% sure and always right: off by 0.1
    probs = np.tile([[0.9, 0.1]], (10, 1))
    assert trust.expected_calibration_error(probs, np.array([0] * 9 + [1])) == pytest.approx(0.0)
    assert trust.expected_calibration_error(probs, np.zeros(10, int)) == pytest.approx(0.1)
    # two bins: 0.6 sure and half right (gap 0.1), 1.0 sure and right (gap 0): ECE = 0.5 * 0.1
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [1.0, 0.0], [1.0, 0.0]])
    assert trust.expected_calibration_error(probs, np.array([0, 1, 0, 0])) == pytest.approx(0.05)


def test_temperature_lowers_held_out_nll(rng):
    fit_logits, fit_y = _overconfident(rng, 3000)
    held_logits, held_y = _overconfident(rng, 3000)
    t = trust.fit_temperature(fit_logits, fit_y)
    assert t > 1.5  # an overconfident model is cooled down
    assert trust.nll(held_logits, held_y, t) < trust.nll(held_logits, held_y) - 0.1
    ece_before = trust.expected_calibration_error(softmax(held_logits), held_y)
    assert trust.expected_calibration_error(softmax(held_logits, t), held_y) < ece_before / 2
    # the temperature never changes a prediction
    assert (softmax(held_logits, t).argmax(1) == held_logits.argmax(1)).all()


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_conformal_sets_cover_at_the_level(rng, level):
    cal_logits, cal_y = _overconfident(rng, 4000, scale=1.0)
    test_logits, test_y = _overconfident(rng, 20000, scale=1.0)
    q = trust.conformal_threshold(softmax(cal_logits), cal_y, level)
    coverage, size = trust.set_coverage(trust.prediction_sets(softmax(test_logits), q), test_y)
    assert level - 0.015 <= coverage <= level + 0.015
    assert 0.5 <= size < 10
    # the finite-sample rule: fewer held-out images than the level allows -> every class in the set
    assert trust.conformal_threshold(softmax(cal_logits[:5]), cal_y[:5], 0.9) == 1.0


def test_calibration_fit_uses_disjoint_halves_and_round_trips(rng):
    logits, y = _overconfident(rng, 2000)
    c = trust.Calibration.fit(logits, y, "synthetic", level=0.9)
    assert c == trust.Calibration.from_dict(json.loads(json.dumps(c.to_dict())))
    sets = c.sets(c.probabilities(logits))
    in_set = sets.any(axis=1)  # a non-empty set always holds the top class
    assert sets[np.arange(len(sets)), logits.argmax(1)][in_set].all()
    figures, sets = trust.measure(logits, y, c)
    assert figures.ece_calibrated < figures.ece
    assert sets.alpha == pytest.approx(0.1) and abs(sets.coverage - 0.9) < 0.04
    assert trust.measure(logits, y, None)[1] is None
    with pytest.raises(Exception, match="at least 20"):
        trust.Calibration.fit(logits[:10], y[:10], "too few")


def test_run_stores_calibration_and_reports_it(trained_run):
    metrics = json.loads((trained_run.dir / "metrics.json").read_text())
    cal, conf = metrics["calibration"], metrics["conformal"]
    assert {"ece", "ece_calibrated", "temperature"} <= set(cal) and cal["temperature"] > 0
    assert {"alpha", "coverage", "mean_set_size"} <= set(conf) and 0 <= conf["mean_set_size"] <= 10
    assert sum(conf["set_sizes"].values()) == pytest.approx(1)
    assert (trained_run.dir / "reliability.png").stat().st_size > 0
    assert trained_run.calibration is not None and trained_run.calibration.n == 120  # its 20% validation split


def test_run_without_validation_has_no_calibration(small_ds, tmp_path):
    import fmnist

    run = fmnist.train("mlp_512_64", small_ds, tmp_path / "r", epochs=1, val_fraction=0.0, progress=False,
                       log=lambda *_: None)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert run.calibration is None and m["conformal"] is None
    assert m["calibration"]["temperature"] is None and m["calibration"]["ece"] > 0
    from fmnist.predict import Predictor

    p = Predictor(tmp_path / "r").predictions(small_ds.test.images[:2], ["a", "b"])
    assert p[0].set is None


def test_evaluate_command_writes_trust_pictures(trained_run, tmp_path, capsys):
    from fmnist.cli import main

    out = tmp_path / "ev"
    assert main(["evaluate", str(trained_run.dir), "--limit", "600", "--test-limit", "300", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "calibration: ECE" in text and "prediction sets hold the true class" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["calibration"]["temperature"] == trained_run.calibration.temperature and m["conformal"]["coverage"] > 0
    for name in ("reliability.png", "embedding.png", "misclassified.png", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 5_000, name


def test_calibrate_command_refits_at_another_level(trained_run, tmp_path, capsys):
    import shutil

    from fmnist.cli import main
    from fmnist.predict import Predictor

    run = tmp_path / "run"
    shutil.copytree(trained_run.dir, run)
    assert main(["calibrate", str(run), "--level", "0.95", "--limit", "600", "--test-limit", "300"]) == 0
    assert "temperature" in capsys.readouterr().out
    p = Predictor(run)
    assert p.calibration.level == 0.95 and p.calibration.threshold >= trained_run.calibration.threshold
    assert json.loads((run / "metrics.json").read_text())["conformal"]["level"] == 0.95
    # another slice of the data cannot rebuild the run's validation split: refused, nothing changed
    assert main(["calibrate", str(run), "--limit", "500"]) == 2
    assert "give the data the run was trained on" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--level", "1.5", "--limit", "600"]) == 2
