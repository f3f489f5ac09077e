import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fmnist.metrics import classification_metrics


def test_metrics_agree_with_sklearn(rng):
    y = rng.integers(0, 10, 500)
    logits = rng.normal(size=(500, 10)) + 3 * np.eye(10)[y] * (rng.random(500) < 0.7)[:, None]
    names = [str(i) for i in range(10)]
    m = classification_metrics(y, logits, names)
    pred = logits.argmax(1)
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert (np.array(m.confusion_matrix) == skm.confusion_matrix(y, pred, labels=range(10))).all()
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(10), zero_division=0)
    assert [m.per_class[n]["f1"] for n in names] == pytest.approx(f)
    assert [m.per_class[n]["precision"] for n in names] == pytest.approx(p)
    assert [m.per_class[n]["recall"] for n in names] == pytest.approx(r)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert m.loss == pytest.approx(skm.log_loss(y, probs, labels=range(10)))


def test_interval_functions_against_known_values():
    from fmnist.metrics import mean_interval, paired_comparison, wilson_interval

    # Wilson's closed form for 9,000 of 10,000: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    z, n, p = 1.959963984540054, 10000, 0.9
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(9000, 10000)
    assert (lo, hi) == pytest.approx(((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)))
    assert (round(lo, 4), round(hi, 4)) == (0.894, 0.9057)
    lo, hi = mean_interval([0.90, 0.91, 0.92])  # mean 0.91, sd 0.01, t(0.975, 2) = 4.303
    assert (lo, hi) == pytest.approx((0.91 - 4.302653 * 0.01 / math.sqrt(3), 0.91 + 4.302653 * 0.01 / math.sqrt(3)))
    import numpy as np

    a = np.array([True] * 60 + [False] * 40)  # a right on 60, b right on 50: 15 only a, 5 only b
    b = np.array([True] * 45 + [False] * 15 + [True] * 5 + [False] * 35)
    c = paired_comparison(a, b)
    assert (c.only_a, c.only_b, c.difference) == (15, 5, pytest.approx(0.10))
    assert c.p_value == pytest.approx(0.04138947, rel=1e-5)  # exact two-sided binomial test of 15 of 20
    half = 1.959963984540054 * math.sqrt((20 - 10 ** 2 / 100) / 100 ** 2)
    assert c.ci95 == pytest.approx((0.10 - half, 0.10 + half))


def test_accuracy_takes_scores_or_predicted_classes():
    from fmnist.metrics import accuracy

    y = np.array([0, 1, 2, 2])
    logits = np.array([[5, 0, 0], [0, 5, 0], [5, 0, 0], [0, 0, 5]])
    assert accuracy(y, logits) == accuracy(y, logits.argmax(1)) == 0.75
