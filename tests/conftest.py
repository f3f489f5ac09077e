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


def glyphs(k, n_per, seed=0):
    """k classes of synthetic 28x28 glyphs, n_per each: class c is a bar at one of 12 angles (c % 12) with a dot in
    one of 4 corners (c // 12 % 4) and one of 8 bar lengths (c // 48), plus noise; labels are class numbers."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-14:14, -14:14] + 0.5
    x, y = [], []
    for c in range(k):
        a, corner, length = np.pi * (c % 12) / 12, c // 12 % 4, 11 - c // 48
        d = np.abs(xx * np.sin(a) - yy * np.cos(a))
        bar = np.clip((1.5 - d) / 1.5, 0, 1) * (np.abs(xx * np.cos(a) + yy * np.sin(a)) < length)
        cx, cy = (-9, -9, 9, 9)[corner], (-9, 9, -9, 9)[corner]
        dot = np.hypot(xx - cx, yy - cy) < 2.5
        base = 255 * np.maximum(bar, dot)
        for _ in range(n_per):
            shift = rng.integers(-1, 2, 2)
            x.append(np.clip(np.roll(base, tuple(shift), (0, 1)) + rng.normal(0, 20, base.shape), 0, 255)
                     .astype(np.uint8))
            y.append(c)
    return np.stack(x), np.array(y)
