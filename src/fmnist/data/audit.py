"""The data audit and the explicit cleaning policy.

Policy (reported, never silent):
1. rows with an empty cell, or a cell that is not an integer in range (pixel 0..255, label 0..9) are dropped;
2. conflicting duplicates (one image, two or more labels) are all dropped: no copy can be trusted;
3. exact duplicates (same image and label) keep their first occurrence;
4. train images that also appear in test are dropped from train (leakage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fmnist.data.readers import RawSplit


@dataclass(frozen=True)
class SplitAudit:
    """What the audit found in one split and what cleaning kept."""

    source: str
    rows_read: int
    rows_kept: int
    rows_with_missing_values: int
    rows_with_invalid_values: int
    duplicates_removed: int
    conflicting_duplicates_removed: int
    overlap_removed: int  # train only: rows whose image is also in test
    class_counts: dict[str, int]  # after cleaning
    balanced: bool  # every class within 10% of the mean count
    examples: dict[str, list[str]]


def image_keys(images: np.ndarray) -> np.ndarray:
    """One hashable key per image (N,) so equal images have equal keys."""
    flat = np.ascontiguousarray(images.reshape(len(images), int(np.prod(images.shape[1:]))))
    return flat.view(np.dtype((np.void, flat.shape[1]))).ravel()


def _dedupe(images: np.ndarray, labels: np.ndarray, where: Callable[[int], str]
            ) -> tuple[np.ndarray, int, int, list[str]]:
    """Indices to keep after dropping conflicting duplicates and all but the first exact duplicate.

    `where(i)` names row i in the source file ("line 7", "item 6") for the examples.
    """
    keys = image_keys(images)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    # an image group conflicts when its labels differ: compare min and max label per group
    lmin = np.full(len(first), np.iinfo(np.int64).max)
    lmax = np.full(len(first), np.iinfo(np.int64).min)
    np.minimum.at(lmin, inverse, labels)
    np.maximum.at(lmax, inverse, labels)
    conflicting_group = lmin != lmax
    conflict_rows = conflicting_group[inverse]
    is_first = np.zeros(len(labels), bool)
    is_first[first] = True
    keep = is_first & ~conflict_rows
    n_conflict = int(conflict_rows.sum())
    n_dup = int((~is_first & ~conflict_rows).sum())
    ex = []
    for g in np.flatnonzero(conflicting_group)[:5]:
        rows = np.flatnonzero(inverse == g)
        ex.append(f"{', '.join(where(r) for r in rows[:4])}: one image with labels "
                  f"{sorted(set(labels[rows].tolist()))}")
    return np.flatnonzero(keep), n_dup, n_conflict, ex


def _counts(labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, int]:
    c = np.bincount(labels, minlength=len(class_names))
    return {name: int(c[i]) for i, name in enumerate(class_names)}


def _balanced(counts: dict[str, int]) -> bool:
    v = np.array(list(counts.values()), dtype=float)
    return bool(v.mean() > 0 and np.all(np.abs(v - v.mean()) <= 0.1 * v.mean()))


def audit_and_clean(train: RawSplit, test: RawSplit | None, class_names: tuple[str, ...]
                    ) -> tuple[dict[str, np.ndarray], dict[str, SplitAudit], int]:
    """Audit both splits and apply the cleaning policy.

    Returns (kept row indices per split, audits per split, train/test overlap count).
    """
    kept: dict[str, np.ndarray] = {}
    stats: dict[str, dict] = {}
    for name, raw in (("train", train), ("test", test)):
        if raw is None:
            continue
        valid = np.flatnonzero(~(raw.missing | raw.invalid))
        # examples name source rows: CSV lines, or item numbers of formats without lines
        def where(i: int, raw: RawSplit = raw, valid: np.ndarray = valid) -> str:
            return f"line {valid[i] + raw.row_offset}" if raw.row_offset else f"item {valid[i]}"

        keep_rel, n_dup, n_conf, conf_ex = _dedupe(raw.images[valid], raw.labels[valid], where)
        kept[name] = valid[keep_rel]
        ex = dict(raw.examples)
        if conf_ex:
            ex["conflicting_duplicates"] = conf_ex
        stats[name] = dict(source=raw.source, rows_read=len(raw), rows_with_missing_values=int(raw.missing.sum()),
                           rows_with_invalid_values=int(raw.invalid.sum()), duplicates_removed=n_dup,
                           conflicting_duplicates_removed=n_conf, examples=ex)
    overlap = 0
    if "test" in kept:
        test_keys = image_keys(test.images[kept["test"]])
        in_test = np.isin(image_keys(train.images[kept["train"]]), test_keys)
        overlap = int(in_test.sum())
        kept["train"] = kept["train"][~in_test]
    audits = {}
    for name, s in stats.items():
        raw = train if name == "train" else test
        counts = _counts(raw.labels[kept[name]], class_names)
        audits[name] = SplitAudit(rows_kept=len(kept[name]), overlap_removed=overlap if name == "train" else 0,
                                  class_counts=counts, balanced=_balanced(counts), **s)
    return kept, audits, overlap


def first_problem(raw: RawSplit) -> str | None:
    """The first unusable row of a split, described in one line (for --no-clean)."""
    for key in ("missing", "non_numeric", "non_integer", "not_finite", "label_out_of_range", "pixel_out_of_range",
                "invalid"):
        if raw.examples.get(key):
            return f"{raw.source}: {raw.examples[key][0]}"
    if (raw.missing | raw.invalid).any():
        return f"{raw.source}: row {int(np.flatnonzero(raw.missing | raw.invalid)[0])} is unusable"
    return None
