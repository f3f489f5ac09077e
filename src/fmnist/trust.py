"""Honest probabilities and prediction sets: calibration error, temperature scaling and split conformal prediction.

Pure functions on arrays, plus `Calibration`, what a run stores with its model (checkpoint metadata "calibration").

Written here rather than taken from a library: temperature scaling is one scalar minimisation (scipy) and split
conformal prediction one quantile; netcal, torchcp and MAPIE would each bring a dependency (MAPIE wants a
scikit-learn estimator, not logits) for these few lines, and the formulas below are the published ones
(Guo et al. 2017, "On Calibration of Modern Neural Networks"; Sadinle, Lei & Wasserman 2019, "Least Ambiguous
Set-Valued Classifiers"; Angelopoulos & Bates 2021, "A Gentle Introduction to Conformal Prediction", section 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fmnist.errors import FmnistError
from fmnist.metrics import CalibrationFigures, SetFigures, softmax

ECE_BINS = 15
DEFAULT_LEVEL = 0.9  # prediction sets hold the true class with this probability


def check_level(level: float) -> None:
    """One line unless `level` (the probability that a prediction set holds the true class) is in (0, 1)."""
    if not (isinstance(level, int | float) and 0 < level < 1):
        raise FmnistError(f"the prediction-set level (--level) must be between 0 and 1 (e.g. 0.9), got {level}")


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-class confidence against accuracy in `bins` equal-width bins of confidence: per bin the number of
    predictions, their mean confidence and their accuracy (NaN in empty bins)."""
    probs = np.asarray(probs, dtype=np.float64)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lo, hi] bins, as Guo et al.
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the share-weighted mean gap |accuracy - confidence| over equal-width confidence bins (Guo et al.)."""
    b = reliability_bins(probs, labels, bins)
    filled = b["count"] > 0
    gaps = np.abs(b["accuracy"][filled] - b["confidence"][filled])
    return float((gaps * b["count"][filled]).sum() / max(1, b["count"].sum()))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer labels under softmax(logits / temperature)."""
    from scipy.special import log_softmax

    lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-lp[np.arange(len(lp)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) on held-out data (Guo et al.): one
    parameter, so it changes no prediction, only how sure they claim to be."""
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        raise FmnistError("fitting a temperature needs held-out images")
    res = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20)),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def conformal_threshold(probs: np.ndarray, labels: np.ndarray, level: float = DEFAULT_LEVEL) -> float:
    """Split conformal prediction with the LAC score 1 - p(true class) (Sadinle et al.): the finite-sample corrected
    quantile q of the held-out scores, so that {classes with p >= 1 - q} holds the true class of a new image with
    probability >= level (and, scores being continuous, at most level + 1/(n+1)). LAC gives the smallest sets on
    average among the standard scores (APS and RAPS give larger sets for better per-class coverage).

    A set may be empty: when a model is right more often than `level`, the images it is least sure of get no class
    at that level. Forcing the top class into every set would keep coverage at the model's accuracy instead of
    the level asked for; an empty set is reported as such ("no class is likely enough at 90%")."""
    check_level(level)
    n = len(labels)
    if n == 0:
        raise FmnistError("conformal calibration needs held-out images")
    scores = 1.0 - np.asarray(probs, dtype=np.float64)[np.arange(n), np.asarray(labels)]
    rank = int(np.ceil((n + 1) * level))
    if rank > n:  # too few images for this level: the set must hold every class
        return 1.0
    return float(np.sort(scores)[rank - 1])


def prediction_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """(N, C) booleans: the classes in each image's prediction set, those with p >= 1 - threshold."""
    return np.asarray(probs, dtype=np.float64) >= 1.0 - threshold - 1e-12


def set_coverage(sets: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(share of images whose set holds the true class, mean set size)."""
    sets = np.asarray(sets, dtype=bool)
    return float(sets[np.arange(len(sets)), np.asarray(labels)].mean()), float(sets.sum(axis=1).mean())


def set_sizes(sets: np.ndarray) -> dict[str, float]:
    """The share of images whose set is empty, a single class, or several classes."""
    n = np.asarray(sets, dtype=bool).sum(axis=1)
    return {"empty": float((n == 0).mean()), "single": float((n == 1).mean()), "several": float((n > 1).mean())}


@dataclass(frozen=True)
class Calibration:
    """What a run stores with its model to turn logits into honest probabilities and prediction sets.

    The held-out images are split in two halves: the temperature is fitted on one and the conformal threshold
    measured on the other (calibrated probabilities), so the conformal guarantee does not lean on data the
    temperature was fitted to.
    """

    temperature: float
    level: float  # prediction sets hold the true class with this probability
    threshold: float  # a class is in the set when its calibrated probability is >= 1 - threshold
    fitted_on: str  # which held-out images, in words
    n: int  # how many

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities softmax(logits / T)."""
        return softmax(logits, self.temperature)

    def sets(self, probs: np.ndarray) -> np.ndarray:
        """(N, C) booleans: each image's prediction set, from calibrated probabilities."""
        return prediction_sets(probs, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """For the checkpoint's metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibration | None:
        """From checkpoint metadata; None for runs saved without one."""
        return cls(**d) if d else None

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, fitted_on: str, level: float = DEFAULT_LEVEL,
            seed: int = 0) -> Calibration:
        """Fit the temperature on one half of held-out logits and the conformal threshold on the other."""
        n = len(labels)
        if n < 20:
            raise FmnistError(f"calibration needs at least 20 held-out images, got {n}")
        order = np.random.default_rng(seed).permutation(n)
        a, b = order[: n // 2], order[n // 2:]
        t = fit_temperature(logits[a], labels[a])
        q = conformal_threshold(softmax(logits[b], t), labels[b], level)
        return cls(temperature=t, level=level, threshold=q, fitted_on=fitted_on, n=int(n))


def measure(logits: np.ndarray, labels: np.ndarray,
            calibration: Calibration | None) -> tuple[CalibrationFigures, SetFigures | None]:
    """Evaluation's calibration and conformal figures on labelled data (the test set): ECE before and after the
    stored temperature, and the coverage and mean size of the prediction sets (None without a calibration)."""
    raw = softmax(logits)
    ece, loss = expected_calibration_error(raw, labels), nll(logits, labels)
    if calibration is None:
        return CalibrationFigures(ece, ECE_BINS, loss), None
    cal = calibration.probabilities(logits)
    figures = CalibrationFigures(ece, ECE_BINS, loss, calibration.temperature, expected_calibration_error(cal, labels),
                                 nll(logits, labels, calibration.temperature))
    sets = calibration.sets(cal)
    coverage, size = set_coverage(sets, labels)
    return figures, SetFigures(round(1 - calibration.level, 10), calibration.level, coverage, size, set_sizes(sets),
                               calibration.threshold)
