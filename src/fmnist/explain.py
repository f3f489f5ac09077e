"""Why a model decided: saliency heatmaps (captum) and a 2-D map of what the model learned (openTSNE).

captum is PyTorch's own attribution library: Grad-CAM for convolutional nets (Selvaraju et al. 2017) and integrated
gradients for the MLPs (Sundararajan et al. 2017), both on any fmnist model without changing it. pytorch-grad-cam
would bring OpenCV for the same Grad-CAM. openTSNE (FFT-accelerated t-SNE) maps 10,000 test images in well under a
minute on 2 cores, with a fixed seed; umap-learn needs numba and its compile time on every first call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from fmnist.choices import EXPLAIN_METHODS
from fmnist.data import to_input
from fmnist.errors import FmnistError, require_extra

METHODS = EXPLAIN_METHODS
MIN_CAM_SIDE = 7  # Grad-CAM on the last convolution whose output is at least 7x7 (a quarter of 28): finer maps


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def cam_layer(model: nn.Module) -> nn.Conv2d | None:
    """The convolution Grad-CAM looks at: the last one whose output is at least MIN_CAM_SIDE pixels wide (found by
    running one blank image through the model); None for a model without convolutions (the MLPs)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    sides: dict[nn.Module, int] = {}
    hooks = [c.register_forward_hook(lambda m, _i, o: sides.__setitem__(m, int(o.shape[-1]))) for c in convs]
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28, device=_device(model)))
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    ran = [c for c in convs if c in sides]
    wide = [c for c in ran if sides[c] >= MIN_CAM_SIDE]
    return (wide or ran or convs)[-1]


def saliency(model: nn.Module, images: np.ndarray, targets: Sequence[int] | np.ndarray | None = None,
             method: str = "auto", batch_size: int = 256) -> np.ndarray:
    """(N, 28, 28) heatmaps in 0..1 of what drove each image's prediction (or the class in `targets`).

    method: "gradcam" (convolutional nets), "integrated_gradients" (any model; from a black image, so the empty
    background of a dataset image gets no credit), or "auto": Grad-CAM where the model has convolutions. Only
    evidence for the class is shown (positive attributions), each map scaled to its own maximum.
    """
    require_extra("explain", "captum")
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

    if method not in METHODS:
        raise FmnistError(f"saliency method '{method}' unknown; choose from {', '.join(METHODS)}")
    images = np.asarray(images, dtype=np.uint8)
    if len(images) == 0:
        return np.zeros((0, 28, 28), np.float32)
    layer = cam_layer(model) if method in ("auto", "gradcam") else None
    if method == "gradcam" and layer is None:
        raise FmnistError("Grad-CAM needs a convolutional model; use integrated_gradients for an MLP")
    was = model.training
    model.eval()
    device = _device(model)
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = to_input(images[i:i + batch_size], device)
            if targets is None:
                with torch.no_grad():
                    t = model(x).argmax(1)
            else:
                t = torch.as_tensor(np.asarray(targets[i:i + batch_size]), dtype=torch.long, device=device)
            if layer is not None:
                a = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
                a = LayerAttribution.interpolate(a, (28, 28), "bilinear")
            else:
                baseline = to_input(np.zeros((1, 28, 28), np.uint8), device).expand_as(x)
                a = IntegratedGradients(model).attribute(x, baselines=baseline, target=t, n_steps=32)
            a = a.detach().float().clamp(min=0)[:, 0].cpu().numpy()
            peak = a.reshape(len(a), -1).max(axis=1)
            out.append(a / np.where(peak > 0, peak, 1.0)[:, None, None])
    finally:
        model.train(was)
    return np.concatenate(out).astype(np.float32)


def features(model: nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """(N, D) penultimate-layer features: the input of the model's last linear layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise FmnistError("the model has no linear output layer to take features from")
    grabbed: list[torch.Tensor] = []
    hook = linears[-1].register_forward_hook(lambda _m, inp, _o: grabbed.append(inp[0].detach().float().cpu()))
    was = model.training
    model.eval()
    device = _device(model)
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model(to_input(images[i:i + batch_size], device))
    finally:
        hook.remove()
        model.train(was)
    return torch.cat(grabbed).flatten(1).numpy()


@dataclass(frozen=True)
class Embedding:
    """A 2-D map of images: coordinates (N, 2) and the labels they were drawn with."""

    xy: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    seconds: float


MIN_EMBEDDING_IMAGES = 10  # t-SNE needs a neighbourhood: fewer points give no map worth drawing


def embed(model: nn.Module, images: np.ndarray, true: np.ndarray, predicted: np.ndarray, seed: int = 0) -> Embedding:
    """t-SNE (openTSNE, perplexity 30, PCA initialisation) of the penultimate-layer features, PCA to 50 first."""
    import time

    require_extra("explain", "openTSNE")
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    if len(images) < MIN_EMBEDDING_IMAGES:
        raise FmnistError(f"an embedding map needs at least {MIN_EMBEDDING_IMAGES} images, got {len(images)}")
    start = time.perf_counter()
    f = features(model, images)
    if f.shape[1] > 50:
        f = PCA(min(50, len(f)), random_state=seed).fit_transform(f)
    perplexity = float(min(30, max(2, (len(f) - 1) / 3)))
    xy = np.asarray(TSNE(perplexity=perplexity, n_jobs=max(1, torch.get_num_threads()), random_state=seed,
                         verbose=False).fit(f.astype(np.float64)))
    return Embedding(xy, np.asarray(true), np.asarray(predicted), time.perf_counter() - start)


def embedding_map(model: nn.Module, images: np.ndarray, true: np.ndarray, predicted: np.ndarray,
                  class_names: Sequence[str], path: str | os.PathLike | None = None, seed: int = 0) -> Figure:
    """The map of `embed`, drawn (and written to path): points coloured by true class, mistakes marked, a few
    thumbnails."""
    from fmnist import plots

    e = embed(model, images, true, predicted, seed)
    return plots.embedding(e.xy, e.true, e.predicted, images, class_names, path)


def explain_files(model: nn.Module, images: np.ndarray, names: Sequence[str], class_names: Sequence[str],
                  probs: np.ndarray, out_dir: str | os.PathLike, method: str = "auto",
                  sets: np.ndarray | None = None, level: float | None = None) -> list[Path]:
    """One PNG per image in out_dir: the image, the heatmap over it, and the top classes."""
    from fmnist import plots
    from fmnist.files import prepare_out_dir

    out = prepare_out_dir(out_dir, existing="keep")
    heat = saliency(model, images, probs.argmax(1), method=method)
    paths = []
    used: set[str] = set()
    for k, (img, h, p, name) in enumerate(zip(images, heat, probs, names, strict=True)):
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(name)).name)[:80] or "image"
        stem = stem if stem not in used else f"{stem}-{k}"
        used.add(stem)
        in_set = None
        if sets is not None and level is not None:
            from fmnist.predict import describe_set

            in_set = describe_set([class_names[j] for j in np.flatnonzero(sets[k])], level)
        path = out / f"{stem}.explain.png"
        plots.explanation(img, h, p, class_names, path, title=str(name), prediction_set=in_set)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Explained:
    """One input explained by `explain_inputs`: its name, the predicted class and probability, the picture."""

    name: str
    label: str
    probability: float
    path: Path


def explain_inputs(run_dir: str | os.PathLike, files: Sequence[str | os.PathLike],
                   out_dir: str | os.PathLike | None = None, method: str = "auto", invert: str = "auto",
                   preprocess: str = "dataset", notes: list[str] | None = None) -> list[Explained]:
    """`fmnist explain` in one call: read every input first (pictures, .npy arrays, CSV rows, prepared as for
    predict; a bad one is refused before anything is written), predict with the run's calibration, and write
    OUT/NAME.explain.png for each (default OUT: RUN_DIR/explain). What reading changed is appended to `notes`."""
    from fmnist.files import prepare_out_dir
    from fmnist.predict import Predictor, load_inputs

    if method not in METHODS:
        raise FmnistError(f"saliency method '{method}' unknown; choose from {', '.join(METHODS)}")
    predictor = Predictor(run_dir)
    images, names = [], []
    for f in files:
        x, n = load_inputs(f, invert=invert, notes=notes, preprocess=preprocess)
        images.append(x)
        names += n
    out = prepare_out_dir(out_dir or Path(run_dir) / "explain", existing="keep")
    x = np.concatenate(images)
    probs = predictor.predict_proba(x)
    cal = predictor.calibration
    paths = explain_files(predictor.model, x, names, predictor.class_names, probs, out, method=method,
                          sets=cal.sets(probs) if cal else None, level=cal.level if cal else None)
    return [Explained(n, predictor.class_names[int(p.argmax())], float(p.max()), path)
            for n, p, path in zip(names, probs, paths, strict=True)]
