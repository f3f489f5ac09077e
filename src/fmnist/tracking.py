"""Optional MLflow tracking (`pip install 'fmnist[mlflow]'`): a run's settings, curves, results and files in an
MLflow store (a SQLite file for one machine, a tracking server URL for a team), viewable with `mlflow ui`.

fmnist's run directories stay the record; this mirrors them into MLflow as they are written.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fmnist.errors import FmnistError, require_extra

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT = "fmnist"


def resolve_uri(uri: str | None) -> str:
    """The store to log to: the URI given, else $MLFLOW_TRACKING_URI, else a SQLite file here."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class Tracker:
    """One MLflow run (or a nested one): parameters, per-epoch metrics, final metrics, tags and artifacts."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self.mlflow, self.run_id = mlflow, run.info.run_id

    def params(self, config: dict[str, Any]) -> None:
        """The full config as parameters (nested values as JSON)."""
        flat = {k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for k, v in config.items()}
        self.mlflow.log_params(flat)

    def epoch(self, history: Any) -> None:
        """The last epoch of a History: train_loss, train_accuracy, val_loss, val_accuracy, lr at step = epoch."""
        import math

        i = len(history.epoch) - 1
        values = {k: getattr(history, k)[i] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")}
        self.mlflow.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=history.epoch[i])

    def metrics(self, values: dict[str, float | None]) -> None:
        """Final figures (None values are left out)."""
        self.mlflow.log_metrics({k: float(v) for k, v in values.items() if v is not None})

    def artifacts(self, run_dir: Path) -> None:
        """The run directory's files: weights, pictures, metrics.json, config.json, history.csv."""
        for f in sorted(run_dir.iterdir()):
            if f.is_file() and f.suffix in (".safetensors", ".png", ".json", ".csv", ".npz"):
                self.mlflow.log_artifact(str(f))


@contextlib.contextmanager
def track(uri: str | None, run_name: str, tags: dict[str, Any] | None = None, nested: bool = False
          ) -> Iterator[Tracker | None]:
    """An MLflow run for the block when `uri` is given (None: no tracking, yields None)."""
    if uri is None:
        yield None
        return
    require_extra("mlflow", "mlflow")
    import mlflow

    nested = nested or mlflow.active_run() is not None  # inside a study's or a search's run: a child of it
    if not nested:
        mlflow.set_tracking_uri(resolve_uri(uri))
        try:
            mlflow.set_experiment(EXPERIMENT)
        except Exception as e:  # noqa: BLE001  (MlflowException, SQLAlchemy errors, unreachable servers)
            raise FmnistError(f"cannot open the MLflow store {resolve_uri(uri)}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    with mlflow.start_run(run_name=run_name, nested=nested, tags={k: str(v) for k, v in (tags or {}).items()}) as r:
        yield Tracker(mlflow, r)
