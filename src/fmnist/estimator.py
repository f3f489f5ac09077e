"""fmnist as a scikit-learn estimator: `Classifier(model="cnn_bn", epochs=8).fit(X, y)`, then `predict`,
`predict_proba`, `score`, and everything that takes an estimator (GridSearchCV, cross_val_score, Pipeline).

X holds images as a notebook has them: (N, 784), (N, 28, 28) or (N, 28, 28, 1), 0..255 or 0..1 floats, checked
with the same messages as data files; y any labels (numbers or strings: `classes_` keeps them, as scikit-learn's
classifiers do). Training is fmnist's own loop with the model's recipe under the given settings; nothing is
written to disk. Written by hand rather than through skorch: fmnist's loop (schedules, EMA, augmentation, bf16,
TTA) is what is being wrapped, and skorch would replace it with its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from fmnist.errors import DataError


class Classifier(ClassifierMixin, BaseEstimator):
    """A registered model (or a preset) trained by fmnist's loop, with scikit-learn's interface.

    Every argument left None takes the model's recipe (or the preset's); `val_fraction` defaults to 0, since
    scikit-learn's model selection does the validating. `model_params` go to the model's factory (e.g.
    {"activation": "tanh"}); `settings` takes any other TrainConfig field.
    """

    def __init__(self, model: str = "lenet5", preset: str | None = None, epochs: int | None = None,
                 batch_size: int | None = None, optimizer: str | None = None, lr: float | None = None,
                 momentum: float | None = None, weight_decay: float | None = None, schedule: str | None = None,
                 augment: str | None = None, label_smoothing: float | None = None, val_fraction: float = 0.0,
                 patience: int | None = None, tta: bool | None = None, seed: int = 0, device: str = "auto",
                 model_params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                 progress: bool = False) -> None:
        self.model = model
        self.preset = preset
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.augment = augment
        self.label_smoothing = label_smoothing
        self.val_fraction = val_fraction
        self.patience = patience
        self.tta = tta
        self.seed = seed
        self.device = device
        self.model_params = model_params
        self.settings = settings
        self.progress = progress

    def _config(self) -> Any:
        from fmnist.config import TrainConfig

        given = {k: v for k, v in self.get_params().items()
                 if v is not None and k not in ("model", "preset", "model_params", "settings", "progress")}
        return TrainConfig.for_model(self.model, preset=self.preset, model_params=self.model_params,
                                     **{**given, **(self.settings or {})})

    def fit(self, X: Any, y: Any) -> Classifier:
        """Train on images X and labels y; returns self."""
        import torch
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_array

        from fmnist.data import Split, holdout_split
        from fmnist.loop import fit
        from fmnist.models import create_model

        config = self._config()  # a bad setting is one line before any work
        if y is None:
            raise DataError("Classifier requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim != 1:
            raise DataError(f"y: labels must be one-dimensional, got shape {y.shape}")
        if y.dtype.kind in "fc":
            check_array(y, ensure_2d=False, dtype=None, input_name="y")  # NaN or infinity: one clear line
        check_classification_targets(y)  # continuous targets: "Unknown label type"
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise DataError(f"y: {len(self.classes_)} class(es); a classifier needs at least 2")
        images = _images(X, codes, "X")
        train_idx, val_idx = holdout_split(codes, config.val_fraction, config.seed)
        torch.manual_seed(config.seed)
        net = create_model(config.model, num_classes=len(self.classes_), **config.model_params)
        data = Split(images, codes.astype(np.int64))
        self.history_ = fit(net, data.take(train_idx), data.take(val_idx) if len(val_idx) else None, config,
                            progress=self.progress, log=lambda *_: None)
        if self.history_.interrupted:
            raise KeyboardInterrupt
        self.module_, self.config_, self.n_features_in_ = net, config, 784
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, classes) probabilities, in the order of `classes_`."""
        from sklearn.utils.validation import check_is_fitted

        from fmnist.inference import numpy_logits
        from fmnist.metrics import softmax

        check_is_fitted(self, "module_")
        images = _images(X, None, "X")
        return softmax(numpy_logits(self.module_, images, tta=self.config_.tta_views))

    def predict(self, X: Any) -> np.ndarray:
        """The most likely class of each image, as given in y."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "module_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # (N, 784) rows of pixels; (N, 28, 28) arrays too
        tags.input_tags.positive_only = True  # pixels are levels 0..255 (or 0..1)
        tags.non_deterministic = self.device != "cpu"  # CUDA kernels need not repeat to the bit
        return tags


def _images(X: Any, codes: np.ndarray | None, where: str) -> np.ndarray:
    """X as (N, 28, 28) uint8, through the readers' checks; a row they would drop is refused instead (an
    estimator keeps X and y aligned, so it cannot drop rows)."""
    import scipy.sparse

    from fmnist.data.readers import from_arrays

    if scipy.sparse.issparse(X):
        raise TypeError(f"{where}: sparse input is not supported: images are dense arrays of pixels")
    from sklearn.utils.validation import check_array

    # scikit-learn's own messages for what every estimator refuses: empty arrays, NaN and infinity
    X = check_array(X, allow_nd=True, dtype=None, ensure_all_finite=True, input_name=where)
    raw = from_arrays(X, codes if codes is not None else np.zeros(len(X), np.int64), where)
    if raw.invalid.any():
        first = next(iter(v[0] for v in raw.examples.values() if v), "")
        raise DataError(f"{where}: {int(raw.invalid.sum())} image(s) hold pixels outside 0..255 ({first})")
    return raw.images
