
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
