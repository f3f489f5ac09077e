"""Shared fixtures: a small slice of the real data (a few hundred images), tiny synthetic files."""

from __future__ import annotations

import numpy as np
import pytest

from fmnist.data import load_dataset


@pytest.fixture(scope="session")
def small_ds():
    """600 train and 300 test images of the real Fashion-MNIST."""
    return load_dataset(limit=600, test_limit=300)


@pytest.fixture(scope="session")
def trained_run(small_ds, tmp_path_factory):
    """One trained run shared by the tests that only read it (serve, predict, export, evaluate, the page):
    cnn_basic, 2 epochs on the 600 training images."""
    import fmnist

    return fmnist.train("cnn_basic", small_ds, tmp_path_factory.mktemp("trained") / "run", epochs=2,
                        progress=False, log=lambda *_: None)


def write_csv(path, labels, pixels, header=True):
    """A Kaggle-style CSV from label and pixel rows (rows are lists of cell strings or numbers)."""
    lines = []
    if header:
        lines.append(",".join(["label"] + [f"pixel{i}" for i in range(1, 785)]))
    for lab, px in zip(labels, pixels, strict=True):
        lines.append(",".join([str(lab)] + [str(v) for v in px]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
