"""Pure metric functions on arrays (checked against scikit-learn in the tests), and their typed result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CalibrationFigures:
    """How well a model's probabilities match its accuracy on labelled data: expected calibration error and
    log-loss as trained and, when the run stored a temperature, with it (fmnist.trust.measure)."""

    ece: float
    bins: int
    nll: float
    temperature: float | None = None
    ece_calibrated: float | None = None
    nll_calibrated: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CalibrationFigures | None:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__}) if d else None


@dataclass(frozen=True)
class SetFigures:
    """How the conformal prediction sets did on labelled data: coverage against the level they promise, their
    mean size and how often they hold none, one or several classes."""

    alpha: float
    level: float
    coverage: float
    mean_set_size: float
    set_sizes: dict[str, float]  # "empty", "single", "several" -> fraction of images
    threshold: float

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SetFigures | None:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__}) if d else None


@dataclass(frozen=True)
class Evaluation:
    """How a model did on one labelled split."""

    accuracy: float
    loss: float  # mean cross-entropy
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # class -> precision, recall, f1, support
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted
    most_confused: list[dict]  # the most frequent (true, predicted, count) mistakes
    n: int  # images evaluated
    class_names: tuple[str, ...] = field(default=())
    split: str = "test"  # which split: test, train, validation
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)  # (n,) predicted classes
    # fmnist.trust.measure: ECE before/after the run's temperature; the prediction sets' coverage (None: no sets)
    calibration: CalibrationFigures | None = None
    conformal: SetFigures | None = None

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict (the per-image predictions left out)."""
        d = {k: v for k, v in asdict(self).items() if k != "predictions"}
        return {**d, "class_names": list(self.class_names)}


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The fraction of `y_true` (N,) that `scores` gets right: logits or probabilities (N, C), or predicted
    classes (N,). The one definition every module uses."""
    scores = np.asarray(scores)
    pred = scores.argmax(axis=1) if scores.ndim == 2 else scores
    return float((pred == np.asarray(y_true)).mean()) if len(pred) else float("nan")


def log_loss(y_true: np.ndarray, logits: np.ndarray) -> float:
    """Mean cross-entropy of integer labels under the logits."""
    from sklearn.metrics import log_loss as sk_log_loss

    return float(sk_log_loss(y_true, softmax(logits), labels=np.arange(logits.shape[1])))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows true class, columns predicted."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    return sk_confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def per_class(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support

    prec, rec, f1, sup = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(len(class_names)),
                                                         zero_division=0)
    return {n: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(sup[i])}
            for i, n in enumerate(class_names)}


def confused_pairs(cm: np.ndarray, class_names: Sequence[str], top: int = 5) -> list[dict]:
    """The most frequent (true, predicted) mistakes."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:top]
    return [{"true": class_names[i], "predicted": class_names[j], "count": int(off[i, j])}
            for i, j in zip(*np.unravel_index(order, off.shape), strict=True) if off[i, j] > 0]


def classification_metrics(y_true: np.ndarray, logits: np.ndarray, class_names: Sequence[str],
                           split: str = "test") -> Evaluation:
    """Accuracy, loss, per-class scores, confusion matrix and most-confused pairs of logits (N, C)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = logits.argmax(axis=1)
    cm = confusion_matrix(y_true, pred, len(class_names))
    pc = per_class(y_true, pred, class_names)
    return Evaluation(accuracy=accuracy(y_true, pred), loss=log_loss(y_true, logits),
                      macro_f1=float(np.mean([v["f1"] for v in pc.values()])), per_class=pc,
                      confusion_matrix=cm.tolist(), most_confused=confused_pairs(cm, class_names), n=int(len(y_true)),
                      class_names=tuple(class_names), split=split, predictions=pred.astype(np.int16))


# ------------------------------------------------------------------------------------------------ intervals
def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy of correct/n (the test set as a sample of images)."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("an interval needs at least one image")
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of values measured several times (seeds, folds)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        raise ValueError("a spread needs at least two values")
    half = float(t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return float(v.mean() - half), float(v.mean() + half)


@dataclass(frozen=True)
class PairedComparison:
    """Two models scored on the same images: the accuracy difference a - b, its interval, McNemar's p."""

    difference: float
    ci95: tuple[float, float]
    p_value: float  # McNemar's exact test on the images exactly one of the two gets right
    only_a: int  # images only a gets right
    only_b: int
    n: int


SIGNIFICANCE = 0.05  # a paired difference is called beyond noise when McNemar's p is below this


def beyond_noise(p_value: float, alpha: float = SIGNIFICANCE) -> bool:
    """Whether a paired comparison's McNemar p-value says the difference is beyond noise."""
    return p_value < alpha


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedComparison:
    """Compare two models' per-image correctness on the same test images.

    The interval is the normal (Wald) interval of a paired difference of proportions, whose variance comes from
    the discordant images alone; the p-value is McNemar's exact (binomial) test, via scipy.
    """
    from scipy.stats import binomtest, norm

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired comparison needs two equally long, non-empty vectors of per-image correctness")
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    diff = (only_a - only_b) / n
    var = (only_a + only_b - (only_a - only_b) ** 2 / n) / n ** 2
    half = float(norm.ppf(0.975) * np.sqrt(max(var, 0.0)))
    p = float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    return PairedComparison(diff, (diff - half, diff + half), p, only_a, only_b, n)
