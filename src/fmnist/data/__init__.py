"""Data in: read any supported format, audit and clean it, hold it as in-memory arrays, split by index."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from fmnist.data.audit import SplitAudit, audit_and_clean, first_problem
from fmnist.data.folders import is_folder_dataset, read_folder
from fmnist.data.readers import (
    FASHION_CLASSES,
    MAX_CLASSES,
    RawSplit,
    check_class_names,
    from_arrays,
    has_data,
    is_fashion_mnist,
    locate,
    read_class_names,
    read_raw,
    resolve_class_names,
)
from fmnist.errors import DataError

# Fashion-MNIST training-set statistics of pixels/255: models see (x/255 - MEAN) / STD.
MEAN = 0.2860
STD = 0.3530
BLACK = -MEAN / STD  # a black (0) pixel, normalized: what padding and shifting bring in

__all__ = [
    "BLACK", "FASHION_CLASSES", "MAX_CLASSES", "MEAN", "STD", "Dataset", "Split", "SplitAudit", "check_class_names",
    "holdout_split",
    "kfold_splits", "load_dataset", "subset", "to_input",
]


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> Split:
        """The rows at `idx`."""
        return Split(self.images[idx], self.labels[idx])

    def fingerprint(self) -> str:
        """A short hash of the images and labels: runs tested on equal fingerprints saw the same test set."""
        import hashlib

        h = hashlib.sha1(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Dataset:
    """A train split, an optional test split, the class names and what the audit found."""

    train: Split
    test: Split | None
    class_names: tuple[str, ...] | None = None  # None: the numbers 0..K-1 of the labels
    source: str = ""
    cleaned: bool = True
    audit: dict[str, SplitAudit] = field(default_factory=dict)
    train_test_overlap: int = 0
    notes: tuple[str, ...] = ()  # what reading changed (e.g. 0..1 floats scaled to 0..255)
    fashion: bool = False  # Fashion-MNIST (the official files, or its ten class names): what its wording assumes
    naming: str | None = None  # how the classes were named when no names were given (said after the changes)

    def __post_init__(self) -> None:
        names = self.class_names
        if names is None:
            top = max(int(s.labels.max()) for s in (self.train, self.test) if s is not None and len(s)) \
                if len(self.train) else 1
            names = tuple(str(i) for i in range(max(top, 1) + 1))
        object.__setattr__(self, "class_names", check_class_names(tuple(names), "class_names"))
        for name, s in (("train", self.train), ("test", self.test)):
            if s is not None and len(s) and (s.labels.min() < 0 or s.labels.max() >= len(self.class_names)):
                raise DataError(f"{name} labels run {s.labels.min()}..{s.labels.max()}, outside the "
                                f"{len(self.class_names)} classes 0..{len(self.class_names) - 1}")
        if self.class_names == FASHION_CLASSES:
            object.__setattr__(self, "fashion", True)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_arrays(cls, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | None = None,
                    y_test: np.ndarray | None = None, class_names: list[str] | tuple[str, ...] | None = None,
                    clean: bool = True) -> Dataset:
        """A dataset from arrays in a notebook: images uint8 or 0..1 floats, shaped (N, 28, 28), (N, 784) or
        (N, 28, 28, 1); labels class numbers (or one-hot rows). Checked, audited and cleaned as files are, with
        the same messages (what was changed is in `changes()`); class names are numbers unless given."""
        names = check_class_names(tuple(class_names), "class_names") if class_names is not None else None
        k = len(names) if names else None
        if (x_test is None) != (y_test is None):
            raise DataError("give both x_test and y_test, or neither")
        train = from_arrays(x_train, y_train, "x_train", k)
        test = from_arrays(x_test, y_test, "x_test", k) if x_test is not None else None
        return _assemble(train, test, names, "arrays", clean, None, None)

    def changes(self) -> list[str]:
        """One line per thing that makes the data used differ from the files: rescaling, names read as numbers,
        and every row that cleaning dropped (with the first example). Every command prints these."""
        lines = list(self.notes)
        for a in self.audit.values():
            if a.rows_kept == a.rows_read:
                continue
            why = [f"{n:,} {what}" for n, what in (
                (a.rows_with_missing_values, "with empty cells"),
                (a.rows_with_invalid_values, "with invalid values"),
                (a.duplicates_removed, "exact duplicates"),
                (a.conflicting_duplicates_removed, "conflicting duplicates"),
                (a.overlap_removed, "also in the test split")) if n]
            first = next((ex[0] for ex in a.examples.values() if ex), None)
            lines.append(f"{a.source}: kept {a.rows_kept:,} of {a.rows_read:,} rows; dropped {', '.join(why)}"
                         + (f" (e.g. {first})" if first else ""))
        return lines + ([self.naming] if self.naming else [])

    def report(self) -> dict:
        """The data report as a JSON-ready dict (data_report.json)."""
        out: dict = {"source": self.source, "cleaned": self.cleaned, "class_names": list(self.class_names)}
        for name, a in self.audit.items():
            out[name] = {k: getattr(a, k) for k in a.__dataclass_fields__}
        out["train_test_overlap"] = self.train_test_overlap
        out["cleaning_policy"] = [
            "rows with empty cells, non-numeric or non-integer cells, pixels outside 0..255 or labels outside "
            f"0..{len(self.class_names) - 1} are dropped",
            "conflicting duplicates (one image, several labels) are dropped, every copy",
            "exact duplicates (same image and label) keep the first occurrence",
            "train images that also appear in test are dropped from train",
        ]
        return out


def load_dataset(data: str | os.PathLike | None = None, test_data: str | os.PathLike | None = None,
                 clean: bool = True, limit: int | None = None, test_limit: int | None = None,
                 preprocess: str = "dataset", progress: bool | None = None) -> Dataset:
    """Read, audit and (by default) clean a dataset; `limit` and `test_limit` keep the first rows of each split.

    `data` is an IDX directory, a Kaggle CSV, an .npz, or a folder of pictures with one subfolder per class
    (optionally under train/ and test/), prepared to 28x28 as `preprocess` says (the dataset's recipe, fit or
    none; see fmnist.predict.prepare) and cached. What cleaning dropped, anything rescaled and how the classes
    were named is in `Dataset.changes()`.
    """
    for name, n in (("limit", limit), ("test_limit", test_limit)):
        if n is not None and (not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1):
            raise DataError(f"--{name.replace('_', '-')} must be a whole number of rows, at least 1; got {n!r}")
    source = locate(data)
    if source.is_dir() and not has_data(source) and is_folder_dataset(source):
        if test_data is not None:
            raise DataError(f"{source}: a folder of pictures takes its test split from {source / 'test'} (one "
                            "subfolder per class), not --test-data")
        train_raw, test_raw, notes = read_folder(source, preprocess, progress)
        train_raw.notes.extend(notes)
        return _assemble(train_raw, test_raw, train_raw.class_names, str(source), clean, limit, test_limit)
    train_raw, test_raw, source = read_raw(source, test_data, read_class_names(source))
    return _assemble(train_raw, test_raw, read_class_names(source), source, clean, limit, test_limit)


def _assemble(train_raw: RawSplit, test_raw: RawSplit | None, given: tuple[str, ...] | None, source: str,
              clean: bool, limit: int | None, test_limit: int | None) -> Dataset:
    """Name the classes, audit and clean the raw splits, and keep the first `limit`/`test_limit` rows."""
    class_names, named = resolve_class_names(train_raw, test_raw, given)
    fashion = is_fashion_mnist(train_raw, test_raw)
    kept, audits, overlap = audit_and_clean(train_raw, test_raw, class_names)
    if not clean:
        for raw in (train_raw, test_raw):
            if raw is not None and (msg := first_problem(raw)):
                raise DataError(f"{msg}; this row cannot be used as it is: drop --no-clean to drop such rows")
        kept = {"train": np.arange(len(train_raw))}
        if test_raw is not None:
            kept["test"] = np.arange(len(test_raw))
    for name, raw in (("train", train_raw), ("test", test_raw)):
        if raw is not None and len(kept[name]) == 0:
            why = first_problem(raw)
            a = audits[name]
            dropped = [f"{n:,} {what}" for n, what in (
                (a.rows_with_missing_values, "with empty cells"), (a.rows_with_invalid_values, "with invalid values"),
                (a.conflicting_duplicates_removed, "conflicting duplicates (one image with several labels: every "
                                                   "copy is dropped)"),
                (a.duplicates_removed, "exact duplicates"), (a.overlap_removed, "also in the test split")) if n]
            raise DataError(f"{raw.source}: no usable {name} rows: cleaning dropped all {len(raw):,} ("
                            + ", ".join(dropped) + ")" + (f"; e.g. {why.split(': ', 1)[1]}" if why else ""))

    def make(raw: RawSplit, idx: np.ndarray, n: int | None) -> Split:
        if n is not None:
            idx = idx[:n]
        return Split(np.ascontiguousarray(raw.images[idx]), raw.labels[idx].copy())

    train = make(train_raw, kept["train"], limit)
    test = make(test_raw, kept["test"], test_limit) if test_raw is not None else None
    notes = tuple(train_raw.notes) + (tuple(test_raw.notes) if test_raw is not None else ())
    return Dataset(train, test, class_names, source, clean, audits, overlap, notes, fashion, named)


def holdout_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train_idx, val_idx) of a label array; val_fraction 0 keeps every row for training."""
    from sklearn.model_selection import train_test_split

    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    idx = np.arange(len(labels))
    if val_fraction == 0:
        return idx, idx[:0]
    counts = np.bincount(labels) if len(labels) else np.zeros(1, int)
    present = counts[counts > 0]
    k, n_val = len(present), math.ceil(len(labels) * val_fraction)
    if len(present) == 0 or present.min() < 2 or n_val < k or len(labels) - n_val < k:  # what stratifying needs
        raise DataError(f"{len(labels)} training rows are too few for a stratified {val_fraction:.0%} validation "
                        f"split of {k} classes (each class needs 2 rows, each side {k}); use more rows "
                        "(--limit) or --val-fraction 0")
    tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(tr), np.sort(va)


def kfold_splits(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (train_idx, val_idx) pairs, seeded."""
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    counts = np.bincount(labels)
    if len(labels) == 0 or counts[counts > 0].min() < folds:
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} rows of every class; the smallest "
                        f"class has {counts[counts > 0].min()} (use more rows or fewer folds)")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in skf.split(np.zeros(len(labels)), labels)]


def subset(split: Split, n: int, seed: int = 0) -> Split:
    """A stratified random subset of n rows (for quick runs and tests)."""
    if n >= len(split):
        return split
    _, idx = holdout_split(split.labels, n / len(split), seed) if n > 10 else (None, np.arange(n))
    return split.take(idx)


def to_input(images: np.ndarray | object, device: object = None) -> object:
    """uint8 images (N, 28, 28) or (N, 1, 28, 28) -> normalized float tensor (N, 1, 28, 28)."""
    import torch

    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # e.g. a read-only view of decoded bytes
    x = torch.as_tensor(images, device=device)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return (x.float() / 255.0 - MEAN) / STD
