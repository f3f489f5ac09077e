"""Pictures from arrays and typed results (never from models).

Every function returns a matplotlib Figure (shown inline in a notebook) and, given `path`, also writes it as a
PNG atomically. Figures are made with matplotlib's object API, not pyplot: no global state, no GUI backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fmnist.files import save_figure

PathLike = str | os.PathLike


def _text_only(fn: Any) -> Any:
    """Draw with every string taken as plain text: a class name, a title or a run name such as "$\\x$" would
    otherwise be parsed as mathtext (or TeX) and fail, or change, the picture."""
    import functools

    import matplotlib

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)

    return wrapper


def _figure(*size: float) -> Figure:
    return Figure(figsize=size, layout="constrained")


# how many classes a picture shows one by one before it summarizes: beyond this, names and cells no longer fit
MANY_CLASSES = 30


def _class_ticks(ax: Any, names: Sequence[str], axis: str = "x", rotation: int = 45) -> None:
    """Class names as tick labels that stay readable for any number of classes: smaller type as classes grow, and
    beyond a hundred only every n-th name (the picture says which)."""
    k = len(names)
    step = max(1, k // 100)
    size = 8 if k <= 20 else 6 if k <= 50 else 4
    pos = list(range(0, k, step))
    labels = [_short(names[i]) for i in pos]
    if axis == "x":
        ax.set_xticks(pos, labels, rotation=rotation if k > 5 else 0, ha="right" if k > 5 else "center",
                      fontsize=size)
    else:
        ax.set_yticks(pos, labels, fontsize=size)


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[:n - 1] + "…"


def _done(fig: Figure, path: PathLike | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


@_text_only
def class_distribution(counts: dict[str, dict[str, int]], path: PathLike | None = None) -> Figure:
    """Bar charts of class counts, one panel per split ({'train': {name: n}, 'test': {...}})."""
    k = len(next(iter(counts.values()), {}))
    fig = _figure(min(40.0, max(6.0, 0.2 * k)) * len(counts), 4)
    axes = fig.subplots(1, len(counts), squeeze=False)
    for ax, (split, c) in zip(axes[0], counts.items(), strict=True):
        names, values = list(c), list(c.values())
        bars = ax.bar(range(len(names)), values, color="tab:blue")
        if len(names) <= MANY_CLASSES:
            ax.bar_label(bars, fontsize=7)
        _class_ticks(ax, names)
        ax.set_title(f"{split}: {sum(values):,} images")
        ax.set_ylabel("images")
    fig.suptitle("Class distribution")
    return _done(fig, path)


@_text_only
def sample_grid(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: PathLike | None = None,
                per_class: int = 8, seed: int = 0) -> Figure:
    """A grid of sample images, one row per class, with the class name."""
    rng = np.random.default_rng(seed)
    k = min(len(class_names), MANY_CLASSES)  # the first classes; the title says how many of all
    fig = _figure(per_class * 0.9, k * 0.95)
    axes = fig.subplots(k, per_class, squeeze=False)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(pick):
                ax.imshow(images[pick[j]], cmap="gray_r", vmin=0, vmax=255)
        axes[c, 0].text(-3, 14, _short(class_names[c]), ha="right", va="center", fontsize=8)
    fig.suptitle("Sample images per class" + (f" (the first {k} of {len(class_names)} classes)"
                                              if k < len(class_names) else ""))
    return _done(fig, path)


@_text_only
def mean_images(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                path: PathLike | None = None) -> Figure:
    """The mean image of each class as a heatmap."""
    k = min(len(class_names), 100)  # the first hundred classes at most; the title says how many of all
    cols = (k + 1) // 2 if k <= 12 else int(np.ceil(np.sqrt(k * 1.5)))
    rows = int(np.ceil(k / cols))
    fig = _figure(1.6 * cols, 1.8 * rows + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    for c, ax in enumerate(axes.flat):
        ax.axis("off")
        if c < k:
            sel = images[labels == c]
            m = sel.mean(axis=0) if len(sel) else np.zeros(images.shape[1:])
            ax.imshow(m, cmap="inferno", vmin=0, vmax=255)
            ax.set_title(_short(class_names[c], 14), fontsize=8 if k <= 20 else 6)
    fig.suptitle("Mean image per class" + (f" (the first {k} of {len(class_names)} classes)"
                                           if k < len(class_names) else ""))
    return _done(fig, path)


@_text_only
def pixel_histogram(images: np.ndarray, path: PathLike | None = None) -> Figure:
    """Histogram of pixel intensities (log scale: most pixels are background)."""
    fig = _figure(6, 3.5)
    ax = fig.subplots()
    counts = np.bincount(images.reshape(-1), minlength=256)
    ax.bar(np.arange(256), counts, width=1.0, color="tab:gray")
    ax.set_yscale("log")
    ax.set_xlabel("pixel value (0 = background)")
    ax.set_ylabel("pixels (log)")
    ax.set_title(f"Pixel intensities: mean {images.mean():.1f}, {100 * (counts[0] / counts.sum()):.0f}% zeros")
    return _done(fig, path)


@_text_only
def learning_curves(history: Any, path: PathLike | None = None, title: str = "") -> Figure:
    """Train/val loss and accuracy vs epoch of a Run, a History or its dict; marks the lowest validation loss."""
    if hasattr(history, "history"):  # a Run
        title = title or history.config.model
        history = history.history
    if hasattr(history, "as_dict"):
        history = history.as_dict()
    fig = _figure(10, 3.8)
    a1, a2 = fig.subplots(1, 2)
    ep = history["epoch"]
    a1.plot(ep, history["train_loss"], "o-", label="train", ms=3)
    a2.plot(ep, history["train_accuracy"], "o-", label="train", ms=3)
    val_loss = np.array([np.nan if v is None else v for v in history["val_loss"]], dtype=float)
    if np.isfinite(val_loss).any():  # a run without a validation split has no validation curves to draw
        a1.plot(ep, val_loss, "o-", label="validation", ms=3)
        a2.plot(ep, history["val_accuracy"], "o-", label="validation", ms=3)
        best = int(np.nanargmin(val_loss))
        a1.axvline(ep[best], color="gray", ls=":", label=f"lowest val loss (epoch {ep[best]})")
    a1.set(xlabel="epoch", ylabel="loss", title="Loss")
    a2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    a1.legend()
    a2.legend()
    fig.suptitle(title)
    return _done(fig, path)


@_text_only
def fold_curves(histories: Sequence[dict[str, Sequence[float]]], path: PathLike | None = None,
                title: str = "") -> Figure:
    """Curves of all folds on one figure: train loss, val loss, val accuracy."""
    fig = _figure(14, 3.8)
    axes = fig.subplots(1, 3)
    for i, h in enumerate(histories):
        axes[0].plot(h["epoch"], h["train_loss"], label=f"fold {i + 1}")
        axes[1].plot(h["epoch"], h["val_loss"], label=f"fold {i + 1}")
        axes[2].plot(h["epoch"], h["val_accuracy"], label=f"fold {i + 1}")
    for ax, t in zip(axes, ("train loss", "validation loss", "validation accuracy"), strict=True):
        ax.set(xlabel="epoch", title=t)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _done(fig, path)


@_text_only
def confusion_matrix(result: Any, class_names: Sequence[str] | None = None, path: PathLike | None = None,
                     title: str = "") -> Figure:
    """Confusion matrix (rows: true class, columns: predicted) with counts in each cell, of a Run, an Evaluation
    or a (C, C) array of counts (then give class_names)."""
    if hasattr(result, "metrics"):  # a Run: its test evaluation
        result = result.metrics.test
        if result is None:
            raise ValueError("this run has no test evaluation (its data had no test split)")
    if hasattr(result, "confusion_matrix"):
        class_names = class_names or result.class_names
        title = title or f"Confusion matrix ({result.split}, accuracy {result.accuracy:.2%})"
        result = result.confusion_matrix
    cm = np.asarray(result)
    class_names = class_names or [str(i) for i in range(len(cm))]
    k = len(class_names)
    side = min(30.0, max(6.5, 0.16 * k))
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:  # counts in the cells while they fit; beyond, the colour says the fraction
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    _class_ticks(ax, class_names, "x")
    _class_ticks(ax, class_names, "y")
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (test set)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    return _done(fig, path)


@_text_only
def misclassified(images: np.ndarray, true: np.ndarray, pred: np.ndarray, conf: np.ndarray,
                  class_names: Sequence[str], path: PathLike | None = None, n: int = 32,
                  heatmaps: dict[int, np.ndarray] | None = None) -> Figure:
    """A gallery of misclassified images, most confident mistakes first; with heatmaps ({image index: heatmap}, as
    from fmnist.explain.saliency), each image is followed by what drove its prediction."""
    wrong = np.flatnonzero(true != pred)
    wrong = wrong[np.argsort(-conf[wrong])][:n]
    cols = 8
    per = 2 if heatmaps is not None else 1
    rows = max(1, (len(wrong) * per + cols - 1) // cols)
    fig = _figure(cols * 1.5, rows * 1.85)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(wrong):
        ax = axes.flat[k * per]
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"true: {_short(class_names[true[i]])}\npred: {_short(class_names[pred[i]])}\n{conf[i]:.0%}",
                     fontsize=7)
        if heatmaps is not None and i in heatmaps:
            _overlay(axes.flat[k * per + 1], images[i], heatmaps[i])
            axes.flat[k * per + 1].set_title(f"why {_short(class_names[pred[i]])}", fontsize=7)
    fig.suptitle(f"Misclassified images ({len(np.flatnonzero(true != pred))} in all; most confident first"
                 + ("; beside each, the pixels that drove the wrong answer" if heatmaps is not None else "") + ")")
    return _done(fig, path)


def _overlay(ax: Any, image: np.ndarray, heat: np.ndarray) -> None:
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
    ax.imshow(heat, cmap="jet", alpha=0.5 * (heat > 0.05), vmin=0, vmax=1)
    ax.axis("off")


@_text_only
def label_suspects(images: Sequence[np.ndarray], titles: Sequence[str], total: int,
                   path: PathLike | None = None) -> Figure:
    """A gallery of likely label errors, most likely first: each image with its title (given / suggested label)."""
    cols = 8
    rows = max(1, (len(images) + cols - 1) // cols)
    fig = _figure(cols * 1.6, rows * 2.0)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(title, fontsize=6.5)
    fig.suptitle(f"Likely label errors: the top {len(images)} of {total:,} (training rows scored out of fold)")
    return _done(fig, path)


@_text_only
def explanation(image: np.ndarray, heat: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                path: PathLike | None = None, title: str = "", prediction_set: str | None = None) -> Figure:
    """One image as the model saw it, the heatmap of what drove its prediction over it, and its top classes."""
    fig = _figure(9, 3.2)
    a1, a2, a3 = fig.subplots(1, 3, width_ratios=[1, 1, 1.4])
    a1.imshow(image, cmap="gray_r", vmin=0, vmax=255)
    a1.set_title("what the model saw (28x28)", fontsize=9)
    a1.axis("off")
    _overlay(a2, image, heat)
    top = np.argsort(-probs)[:5]
    a2.set_title(f"why {class_names[top[0]]}", fontsize=9)
    a3.barh(range(len(top))[::-1], probs[top], color=["tab:red"] + ["tab:gray"] * (len(top) - 1))
    a3.set_yticks(range(len(top))[::-1], [class_names[j] for j in top], fontsize=8)
    a3.set_xlim(0, 1)
    a3.set_xlabel("probability" + (" (calibrated)" if prediction_set is not None else ""))
    if prediction_set is not None:
        a3.set_title(prediction_set, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _done(fig, path)


@_text_only
def reliability_diagram(logits: np.ndarray, labels: np.ndarray, calibration: Any = None,
                        path: PathLike | None = None, bins: int = 15) -> Figure:
    """Accuracy against confidence per confidence bin, before and (given a trust.Calibration) after temperature
    scaling, with each one's expected calibration error; the diagonal is perfect calibration."""
    from fmnist.metrics import softmax
    from fmnist.trust import expected_calibration_error, reliability_bins

    curves = [("as trained", softmax(logits), "tab:red")]
    if calibration is not None:
        curves.append((f"temperature {calibration.temperature:.2f}", calibration.probabilities(logits), "tab:blue"))
    fig = _figure(5.2, 4.6)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--", label="perfectly calibrated")
    for name, probs, color in curves:
        b = reliability_bins(probs, labels, bins)
        ok = b["count"] > 0
        ece = expected_calibration_error(probs, labels, bins)
        ax.plot(b["confidence"][ok], b["accuracy"][ok], "o-", color=color, ms=4, label=f"{name}: ECE {ece:.2%}")
    ax.set(xlabel="confidence (top-class probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.01),
           title=f"Reliability on {len(labels):,} images ({bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    return _done(fig, path)


@_text_only
def embedding(xy: np.ndarray, true: np.ndarray, pred: np.ndarray, images: np.ndarray, class_names: Sequence[str],
              path: PathLike | None = None, thumbnails: int = 2) -> Figure:
    """A 2-D map of images (t-SNE of the model's features): colour = true class, crosses = misclassified, and
    `thumbnails` images of each class drawn at their place."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    fig = _figure(9, 8)
    ax = fig.subplots()
    cmap = _tab10()
    few = len(class_names) <= 20  # a legend and thumbnails per class while they fit
    if not few:
        thumbnails = 0
    for c, name in enumerate(class_names):
        m = true == c
        ax.scatter(xy[m, 0], xy[m, 1], s=3, color=cmap(c % 10), label=_short(name) if few else None, alpha=0.6,
                   linewidths=0)
    wrong = true != pred
    ax.scatter(xy[wrong, 0], xy[wrong, 1], s=9, marker="x", color="k", linewidths=0.5,
               label=f"misclassified ({int(wrong.sum()):,})")
    rng = np.random.default_rng(0)
    for c in range(len(class_names)):
        idx = np.flatnonzero((true == c) & ~wrong)
        for i in rng.choice(idx, size=min(thumbnails, len(idx)), replace=False) if len(idx) else []:
            box = AnnotationBbox(OffsetImage(images[i], cmap="gray_r", zoom=0.9), xy[i], frameon=True,
                                 bboxprops={"edgecolor": cmap(c % 10), "linewidth": 1.5})
            ax.add_artist(box)
    ax.set(xticks=[], yticks=[], title=f"What the model learned: t-SNE of its features on {len(xy):,} images")
    ax.legend(loc="upper right", fontsize=7, markerscale=3, framealpha=0.8)
    return _done(fig, path)


def _tab10() -> Any:
    from matplotlib import colormaps

    return colormaps["tab10"]


@_text_only
def fold_bars(per_fold: Sequence[Any], path: PathLike | None = None, title: str = "") -> Figure:
    """Validation loss and accuracy (and test accuracy) per fold (cv.Fold results), with the mean as a line."""
    fig = _figure(10, 3.6)
    a1, a2 = fig.subplots(1, 2)
    k = list(range(1, len(per_fold) + 1))
    repeated = any(f.repeat for f in per_fold)  # repeated k-fold: bars labelled repeat.fold
    names = [f"{f.repeat + 1}.{f.fold}" if repeated else str(f.fold) for f in per_fold]
    vl = [f.val_loss for f in per_fold]
    a1.bar(k, vl, color="tab:orange")
    a1.axhline(float(np.mean(vl)), color="k", ls="--", label=f"mean {np.mean(vl):.4f}")
    xlabel = "repeat.fold" if repeated else "fold"
    a1.set(xlabel=xlabel, ylabel="validation loss", title="Validation loss per fold")
    a1.legend()
    w = 0.4
    va = [f.val_accuracy for f in per_fold]
    a2.bar(np.array(k) - w / 2, va, w, label="validation", color="tab:blue")
    if all(f.test_accuracy is not None for f in per_fold):
        a2.bar(np.array(k) + w / 2, [f.test_accuracy for f in per_fold], w, label="test", color="tab:green")
    a2.set_ylim(max(0.0, min(va) - 0.05), 1.0)
    for ax in (a1, a2):
        ax.set_xticks(k, names)
    a2.set(xlabel=xlabel, ylabel="accuracy", title="Accuracy per fold")
    a2.legend()
    fig.suptitle(title)
    return _done(fig, path)


@_text_only
def augmentation_gallery(original: np.ndarray, augmented: Sequence[np.ndarray], path: PathLike | None = None,
                         title: str = "") -> Figure:
    """Each row: an original image, then several augmented versions of it. Arrays (N, 28, 28), any scale."""
    n, k = len(original), len(augmented)
    fig = _figure((k + 1) * 1.1, n * 1.1)
    axes = fig.subplots(n, k + 1, squeeze=False)
    for i in range(n):
        for j, img in enumerate([original[i]] + [a[i] for a in augmented]):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray_r")
            ax.axis("off")
            if i == 0:
                ax.set_title("original" if j == 0 else f"aug {j}", fontsize=7)
    fig.suptitle(title or "Augmented training samples")
    return _done(fig, path)


@_text_only
def accuracy_vs_time(names: Sequence[str], accuracy: Sequence[float], seconds: Sequence[float],
                     ci95: Sequence[tuple[float, float]], reference: Sequence[float | None],
                     path: PathLike | None = None) -> Figure:
    """Test accuracy (with its 95% interval) against training time on a log scale; a red mark at each row's
    reference figure, joined to fmnist's point."""
    fig = _figure(9, 5.2)
    ax = fig.subplots()
    x = np.maximum(np.asarray(seconds, dtype=float), 0.1)
    y = np.asarray(accuracy, dtype=float)
    lo = y - np.array([c[0] for c in ci95])
    hi = np.array([c[1] for c in ci95]) - y
    for i, ref in enumerate(reference):
        if ref is not None:
            ax.plot([x[i], x[i]], [ref, y[i]], color="tab:red", lw=0.8, alpha=0.5)
            ax.plot(x[i], ref, marker="_", color="tab:red", ms=14, mew=2,
                    label="reference project's figure" if i == next(j for j, r in enumerate(reference) if r) else None)
    ax.errorbar(x, y, yerr=[lo, hi], fmt="o", color="tab:blue", capsize=3, label="fmnist (95% interval)")
    for xi, yi, n in zip(x, y, names, strict=True):
        ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(x.min() / 1.3, x.max() * 2.2)  # room for the labels on the right
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(lambda v, _: f"{v:g}")  # 20, 30, 50, not 2x10^1
    ax.set(xlabel="training time (s, log scale)", ylabel="test accuracy", title="Test accuracy against training time")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _done(fig, path)


@_text_only
def compare_runs(histories: Sequence[Any], names: Sequence[str], per_class: Sequence[dict[str, float]],
                 path: PathLike | None = None) -> Figure:
    """Runs side by side: validation accuracy per epoch (train accuracy where a run had no validation split) and
    each class's test accuracy (recall), one colour per run."""
    fig = _figure(12, 4.2)
    a1, a2 = fig.subplots(1, 2, width_ratios=(1, 1.4))
    for h, n in zip(histories, names, strict=True):
        val = np.array([np.nan if v is None else v for v in h.val_accuracy], dtype=float)
        if np.isfinite(val).any():
            a1.plot(h.epoch, val, "o-", ms=3, label=f"{n} (validation)")
        else:
            a1.plot(h.epoch, h.train_accuracy, "o--", ms=3, label=f"{n} (train)")
    a1.set(xlabel="epoch", ylabel="accuracy", title="Accuracy per epoch")
    a1.legend(fontsize=7)
    classes = list(per_class[0])
    if len(classes) > MANY_CLASSES:  # the classes the runs find hardest, where a comparison matters
        classes = sorted(classes, key=lambda c: np.mean([pc[c] for pc in per_class]))[:MANY_CLASSES]
    w = 0.8 / len(per_class)
    for k, (pc, n) in enumerate(zip(per_class, names, strict=True)):
        a2.bar(np.arange(len(classes)) + (k - (len(per_class) - 1) / 2) * w, [pc[c] for c in classes], w, label=n)
    _class_ticks(a2, classes, rotation=35)
    a2.set_ylim(max(0.0, min(min(pc.values()) for pc in per_class) - 0.05), 1.0)
    a2.set(ylabel="test accuracy of the class (recall)",
           title="Per class" + (f" (the {len(classes)} hardest of {len(per_class[0])})"
                                if len(classes) < len(per_class[0]) else ""))
    a2.legend(fontsize=7)
    return _done(fig, path)
