"""fmnist: train, compare, explain and serve Fashion-MNIST classifiers.

    import fmnist
    ds = fmnist.load_dataset(limit=3000, test_limit=1000)
    run = fmnist.train("cnn_basic", ds, epochs=2, out_dir="nb-run")
    fmnist.plots.confusion_matrix(run)
    fmnist.Predictor.from_run("nb-run").predict(ds.test.images[:5])

Names are imported on first use, so `import fmnist` (and the `fmnist` command) starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_dataset": "fmnist.data", "Dataset": "fmnist.data", "Split": "fmnist.data",
    "holdout_split": "fmnist.data", "kfold_splits": "fmnist.data",
    "list_models": "fmnist.models", "create_model": "fmnist.models", "model_info": "fmnist.models",
    "register_model": "fmnist.models",
    "TrainConfig": "fmnist.config",
    "fit": "fmnist.loop", "History": "fmnist.loop",
    "train": "fmnist.run", "train_run": "fmnist.run", "train_within": "fmnist.run", "evaluate": "fmnist.run",
    "Run": "fmnist.run", "RunMetrics": "fmnist.run",
    "Evaluation": "fmnist.metrics",
    "Predictor": "fmnist.predict",
    "PRESETS": "fmnist.recipes",
    "cross_validate": "fmnist.cv", "tune": "fmnist.tuning",
    "Calibration": "fmnist.trust", "find_label_issues": "fmnist.labels", "saliency": "fmnist.explain",
    "FmnistError": "fmnist.errors", "DataError": "fmnist.errors",
    "Classifier": "fmnist.estimator",
}
_MODULES = ("plots", "trust", "explain")  # submodules reachable as attributes: fmnist.plots.confusion_matrix(run)
__all__ = sorted([*_API, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"fmnist.{name}")
    else:
        raise AttributeError(f"module 'fmnist' has no attribute {name!r}")
    globals()[name] = value  # import once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from fmnist import explain, plots, trust  # noqa: F401
    from fmnist.config import TrainConfig  # noqa: F401
    from fmnist.cv import cross_validate  # noqa: F401
    from fmnist.data import Dataset, Split, holdout_split, kfold_splits, load_dataset  # noqa: F401
    from fmnist.errors import DataError, FmnistError  # noqa: F401
    from fmnist.estimator import Classifier  # noqa: F401
    from fmnist.explain import saliency  # noqa: F401
    from fmnist.labels import find_label_issues  # noqa: F401
    from fmnist.loop import History, fit  # noqa: F401
    from fmnist.metrics import Evaluation  # noqa: F401
    from fmnist.models import create_model, list_models, model_info, register_model  # noqa: F401
    from fmnist.predict import Predictor  # noqa: F401
    from fmnist.recipes import PRESETS  # noqa: F401
    from fmnist.run import Run, RunMetrics, evaluate, train, train_run  # noqa: F401
    from fmnist.trust import Calibration  # noqa: F401
    from fmnist.tuning import tune  # noqa: F401
