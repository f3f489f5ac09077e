import numpy as np
import pytest

from fmnist.data import Dataset, Split
from fmnist.explain import cam_layer, embed, features, saliency


def _bars(rng, n):
    """Synthetic pictures: a bright 3x12 bar, horizontal (class 0) or vertical (class 1), anywhere on black."""
    x = np.zeros((n, 28, 28), np.uint8)
    y = rng.integers(0, 2, n)
    boxes = []
    for i in range(n):
        h, w = (3, 12) if y[i] == 0 else (12, 3)
        r, c = rng.integers(1, 28 - h), rng.integers(1, 28 - w)
        x[i, r:r + h, c:c + w] = 255
        boxes.append((r, c, h, w))
    return x, y, boxes


@pytest.fixture(scope="module")
def bars():
    rng = np.random.default_rng(0)
    x, y, boxes = _bars(rng, 1200)
    ds = Dataset(Split(x[:1000], y[:1000]), Split(x[1000:], y[1000:]), class_names=("horizontal", "vertical"))
    return ds, boxes[1000:]


def _mass_on_object(heat, boxes, margin=2):
    """Share of each heatmap's mass within its bar's box (grown by `margin` pixels)."""
    out = []
    for h, (r, c, hh, ww) in zip(heat, boxes, strict=True):
        inside = h[max(0, r - margin):r + hh + margin, max(0, c - margin):c + ww + margin].sum()
        out.append(inside / max(h.sum(), 1e-9))
    return np.array(out)


@pytest.mark.parametrize("model,epochs,accuracy", [("cnn_basic", 3, 0.95), ("mlp_512_64", 8, 0.75)])
def test_heatmap_mass_is_on_the_object(bars, model, epochs, accuracy, tmp_path):
    import fmnist

    ds, boxes = bars
    run = fmnist.train(model, ds, tmp_path / model, epochs=epochs, lr=2e-3, val_fraction=0.1, progress=False,
                       log=lambda *_: None)
    assert run.metrics.test_accuracy > accuracy  # an MLP finds a bar anywhere harder than a conv net
    heat = saliency(run.model, ds.test.images[:50])
    assert heat.shape == (50, 28, 28) and heat.min() >= 0 and heat.max() <= 1
    # the bar with its margin is at most 16x7 = 112 of the 784 pixels (14%): most of the heat is on it
    share = _mass_on_object(heat, boxes[:50])
    assert np.median(share) > 0.5, (model, np.median(share))
    assert (model == "cnn_basic") == (cam_layer(run.model) is not None)


def test_saliency_refuses_gradcam_without_convolutions(bars):
    from fmnist.errors import FmnistError
    from fmnist.models import create_model

    with pytest.raises(FmnistError, match="integrated_gradients"):
        saliency(create_model("mlp_512_64", num_classes=2), bars[0].test.images[:2], method="gradcam")
    with pytest.raises(FmnistError, match="unknown"):
        saliency(create_model("mlp_512_64", num_classes=2), bars[0].test.images[:2], method="shap")


def test_embedding_separates_classes(bars, tmp_path):
    from fmnist import plots
    from fmnist.models import create_model

    ds, _ = bars
    model = create_model("cnn_basic", num_classes=2)
    f = features(model, ds.test.images)
    assert f.shape == (200, 128)
    e = embed(model, ds.test.images, ds.test.labels, ds.test.labels)
    assert e.xy.shape == (200, 2) and np.isfinite(e.xy).all()
    plots.embedding(e.xy, e.true, e.predicted, ds.test.images, ds.class_names, tmp_path / "embedding.png")
    assert (tmp_path / "embedding.png").stat().st_size > 10_000


def test_without_the_explain_extra_training_draws_its_gallery_and_explain_says_what_to_install(
        small_ds, tmp_path, monkeypatch, capsys):
    import sys

    import fmnist
    from fmnist.cli import main

    for module in ("captum", "openTSNE"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    run = fmnist.train("lenet5", small_ds, tmp_path / "r", epochs=1, progress=False, log=lambda *_: None)
    assert (run.dir / "misclassified.png").stat().st_size > 5_000  # the mistakes, without heatmaps
    from PIL import Image

    Image.fromarray(small_ds.test.images[0]).save(tmp_path / "x.png")
    assert main(["explain", str(run.dir), str(tmp_path / "x.png"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "captum" in err and "pip install 'fmnist[explain]'" in err
