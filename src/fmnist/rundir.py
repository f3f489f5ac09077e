"""The run directory: the one module that names a training run's files, and knows which of them are fmnist's own.

A run directory is marked by MARKER, written before any of its files: only a marked directory is ever cleared
(`--overwrite`), and then only the names in OWN_FILES and OWN_DIRS, which fmnist writes into a run; anything else
the user keeps there stays. Another program's config.json proves nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

MARKER = ".fmnist-run"
CONFIG = "config.json"  # the TrainConfig, the data it saw, provenance
MODEL = "model.safetensors"  # weights, with the model, classes, config and calibration in the metadata
METRICS = "metrics.json"  # what the run measured (RunMetrics), the test set's fingerprint
HISTORY = "history.csv"  # per-epoch curves
TRAIN_STATE = "train_state.pt"  # while training: everything `--resume` needs; removed when the run is complete
TEST_PREDICTIONS = "test_predictions.npz"  # the predicted test labels, for paired comparisons (fmnist compare)
STEP_RESULT = "result.json"  # a study step's finished row
LEARNING_CURVES, AUGMENTATION = "learning_curves.png", "augmentation.png"
CONFUSION, MISCLASSIFIED, RELIABILITY, EMBEDDING = ("confusion_matrix.png", "misclassified.png", "reliability.png",
                                                    "embedding.png")  # an evaluation's pictures
PICTURES = (LEARNING_CURVES, AUGMENTATION, CONFUSION, MISCLASSIFIED, RELIABILITY, EMBEDDING)
ONNX, INT8_ONNX, INT8_REPORT, TORCHSCRIPT = "model.onnx", "model.int8.onnx", "int8.json", "model.pt"  # exports
EXPORTS = (ONNX, INT8_ONNX, INT8_REPORT, TORCHSCRIPT)
EVALUATION, EXPLAIN = "evaluation", "explain"  # folders `fmnist evaluate` and `fmnist explain` write by default
# the files whose presence says "a run is here" (a marked directory with one of them is one to refuse by default)
RUN_FILES = (CONFIG, MODEL, METRICS, HISTORY, TRAIN_STATE)
OWN_FILES = frozenset({MARKER, *RUN_FILES, TEST_PREDICTIONS, STEP_RESULT, *PICTURES, *EXPORTS})
OWN_DIRS = frozenset({EVALUATION, EXPLAIN})


class _File:
    """A RunDir attribute that is the path of one of its files: `RunDir(d).metrics` is d / METRICS."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: RunDir | None, owner: type) -> Path | str:
        return self.name if run is None else run.path / self.name


class RunDir:
    """The paths of one run directory's files: `RunDir(d).metrics` is d/metrics.json."""

    marker, config, model, metrics, history = _File(MARKER), _File(CONFIG), _File(MODEL), _File(METRICS), _File(HISTORY)
    train_state, test_predictions, step_result = _File(TRAIN_STATE), _File(TEST_PREDICTIONS), _File(STEP_RESULT)
    evaluation = _File(EVALUATION)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of one of the run's files by its name (one of the constants above)."""
        return self.path / name

    def is_marked(self) -> bool:
        """Whether fmnist marked this directory as one of its runs."""
        return self.marker.is_file()

    @staticmethod
    def is_own(name: str) -> bool:
        """Whether a file name is one fmnist writes into a run (or an atomic write's leftover of one)."""
        return name in OWN_FILES or (name.startswith(".") and ".tmp" in name
                                     and any(name[1:].startswith(f + ".") for f in OWN_FILES))
