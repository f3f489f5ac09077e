"""A training run as files: config.json, history.csv, model.safetensors, metrics.json and pictures."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist.data import Dataset, Split, holdout_split
from fmnist.errors import FmnistError
from fmnist.evaluate import classification_metrics, softmax
from fmnist.files import prepare_out_dir, write_json
from fmnist.train import TrainConfig, fit, load_checkpoint, numpy_logits, save_checkpoint


def provenance() -> dict:
    """Library versions, machine and git revision, saved with every result."""
    import sklearn
    import torchvision

    rev = None
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    from fmnist import __version__

    return {"fmnist": __version__, "git_revision": rev, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def default_run_dir(model: str) -> Path:
    """runs/<model>-<timestamp>/"""
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def evaluate_model(model: torch.nn.Module, split: Split, class_names: tuple[str, ...], out_dir: Path | None,
                   tta: bool = False, prefix: str = "test") -> dict:
    """Metrics of a model on a split; with out_dir, the confusion heatmap and misclassified gallery too."""
    logits = numpy_logits(model, split.images, tta=tta)
    m = classification_metrics(split.labels, logits, class_names)
    if out_dir is not None:
        from fmnist import plots

        probs = softmax(logits)
        plots.confusion_heatmap(np.array(m["confusion_matrix"]), class_names, out_dir / "confusion_matrix.png",
                                title=f"Confusion matrix ({prefix}, accuracy {m['accuracy']:.2%})")
        plots.misclassified(split.images, split.labels, probs.argmax(1), probs.max(1), class_names,
                            out_dir / "misclassified.png")
    return m


def augmentation_picture(images: np.ndarray, spec: str, path: Path, seed: int = 0) -> Path:
    """A gallery of what `--augment spec` does to a few training images."""
    from fmnist import plots
    from fmnist.data import to_input
    from fmnist.train import augment_batch, augment_ops

    g = torch.Generator().manual_seed(seed)
    x = to_input(images)
    aug = [augment_batch(x, augment_ops(spec), g)[:, 0].numpy() for _ in range(7)]
    return plots.augmentation_gallery(x[:, 0].numpy(), aug, path, title=f"--augment {spec}")


def train_run(config: TrainConfig, ds: Dataset, out_dir: str | os.PathLike | None = None,
              progress: bool = True, log: Any = print, plots: bool = True, existing: str = "refuse") -> dict:
    """Split, train, save and evaluate one model; returns the metrics dict (also metrics.json).

    existing: what to do when out_dir already holds a run: "refuse", "overwrite" (clear it first) or "resume"
    (continue from its last finished epoch, with the same config).
    """
    from fmnist import plots as P
    from fmnist.models import count_parameters, create_model
    from fmnist.train import TRAIN_STATE, load_train_state

    if existing not in ("refuse", "overwrite", "resume"):
        raise FmnistError(f"existing must be refuse, overwrite or resume, got {existing!r}")
    out = Path(out_dir) if out_dir else default_run_dir(config.model)
    # everything that can be refused is checked before the directory is touched
    from fmnist.train import resolve_device

    resolve_device(config.device)
    tr_idx, va_idx = holdout_split(ds.train.labels, config.val_fraction, config.seed)
    train, val = ds.train.take(tr_idx), ds.train.take(va_idx)
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(ds.class_names), **config.model_params)
    if existing == "resume":
        load_train_state(out / TRAIN_STATE, config)  # refuses a missing state or other settings
    prepare_out_dir(out, existing="keep" if existing == "resume" else existing)
    n_params = count_parameters(model)
    write_json(out / "config.json", {**config.to_dict(), "data": {
        "source": ds.source, "cleaned": ds.cleaned, "train_rows": len(train), "val_rows": len(val),
        "test_rows": len(ds.test) if ds.test is not None else 0, "class_names": list(ds.class_names)},
        "parameters": n_params, "provenance": provenance()})
    log(f"{config.model}: {n_params:,} parameters; {len(train):,} train / {len(val):,} validation images; "
        f"writing to {out}")
    if plots and config.augment:
        augmentation_picture(train.images[:6], config.augment, out / "augmentation.png", config.seed)
    hist = fit(model, train, val, config, progress=progress, log=log, state_path=out / TRAIN_STATE,
               resume=existing == "resume")
    # validation accuracy of the weights kept: the best epoch's when early stopping restored it, else the last
    val_accuracy = (hist.val_acc[hist.best_epoch - 1] if hist.restored_best else hist.val_acc[-1]) \
        if hist.val_acc and len(val) else None  # None, not NaN, for a run without a validation split
    save_checkpoint(model, out / "model.safetensors", config, ds.class_names, extra={"val_accuracy": val_accuracy})
    hist.to_csv(out / "history.csv")
    if plots and hist.epoch:
        P.learning_curves(hist.as_dict(), out / "learning_curves.png", title=config.model)
    metrics: dict = {"model": config.model, "parameters": n_params, "train_seconds": hist.train_seconds,
                     "train_images_per_second": hist.images_per_second, "epochs_run": len(hist.epoch),
                     "best_epoch": hist.best_epoch, "restored_best": hist.restored_best,
                     "stopped_early": hist.stopped_early, "interrupted": hist.interrupted,
                     "val_accuracy": val_accuracy}
    if ds.test is not None:
        m = evaluate_model(model, ds.test, ds.class_names, out if plots else None, tta=config.tta)
        metrics.update({"test_accuracy": m["accuracy"], "test_loss": m["loss"], "test_macro_f1": m["macro_f1"],
                        "per_class": m["per_class"], "confusion_matrix": m["confusion_matrix"],
                        "most_confused": m["most_confused"], "test_rows": m["n"]})
        log(f"test accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  (train {hist.train_seconds:.0f}s, "
            f"{hist.images_per_second:,.0f} images/s)")
    metrics["provenance"] = provenance()
    write_json(out / "metrics.json", metrics)
    if not hist.interrupted:
        (out / TRAIN_STATE).unlink(missing_ok=True)  # complete: the run's files say everything
    return metrics


def evaluate_run(run_dir: str | os.PathLike, ds: Dataset, out_dir: str | os.PathLike | None = None,
                 tta: bool | None = None) -> dict:
    """Evaluate a saved run on a dataset's test split (or its train split when it has no test split)."""
    model, meta = load_checkpoint(run_dir)
    split, which = (ds.test, "test") if ds.test is not None else (ds.train, "train")
    out = prepare_out_dir(Path(out_dir) if out_dir else Path(run_dir) / "evaluation", existing="keep")
    if tta is None:
        tta = bool(meta.get("config", {}).get("tta", False))
    m = evaluate_model(model, split, tuple(meta["class_names"]), out, tta=tta, prefix=which)
    m.update({"model": meta["model"], "data": ds.source, "split": which, "provenance": provenance()})
    write_json(out / "metrics.json", m)
    return m
