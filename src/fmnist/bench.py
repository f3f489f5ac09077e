"""`fmnist bench`: training and inference speed of fmnist's loop beside the plain PyTorch loop a user would write.

Both are measured in the same process, one after the other, on the same data, so their ratio is meaningful on a
noisy shared machine; absolute figures are not.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fmnist.config import TrainConfig
from fmnist.data import Dataset, holdout_split, to_input
from fmnist.errors import FmnistError
from fmnist.inference import autocast_dtype, numpy_logits, predict_logits, resolve_device
from fmnist.loop import History, fit
from fmnist.models import count_parameters, create_model, model_info
from fmnist.recipes import Preset, get_preset


def reference_fit(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int, batch_size: int,
                  lr: float, seed: int, device: torch.device) -> float:
    """The usual PyTorch loop: TensorDataset + DataLoader, fp32, .item() every step. Returns images/s."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    x = to_input(images)  # the same normalized input as fmnist's loop; only the loop differs
    loader = DataLoader(TensorDataset(x, torch.tensor(labels)), batch_size=batch_size, shuffle=True)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        running = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            running += loss.item()
            seen += len(yb)
    return seen / (time.perf_counter() - t0)


def _test_acc(model: torch.nn.Module, ds: Dataset, dtype: torch.dtype | None) -> float:
    logits = numpy_logits(model, ds.test.images, precision="fp32" if dtype is None else "auto")
    return float((logits.argmax(1) == ds.test.labels).mean())


def inference_speed(model: torch.nn.Module, ds: Dataset, dtype: torch.dtype | None) -> dict:
    """Batch-1 latency (median ms) and large-batch throughput (images/s) under inference_mode."""
    device = next(model.parameters()).device
    model.eval()
    x = to_input(ds.test.images, device)
    one = x[:1]
    times = []
    with torch.inference_mode():
        for _ in range(20):
            model(one)
        for i in range(200):
            t = time.perf_counter()
            model(x[i:i + 1])
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    t = time.perf_counter()
    predict_logits(model, x, batch_size=1024, dtype=dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"batch1_latency_ms": 1000 * statistics.median(times),
            "batch_throughput": len(x) / (time.perf_counter() - t)}


def bench(ds: Dataset, models: list[str], epochs: int = 1, batch_size: int = 128, device: str = "auto",
          log: Any = print) -> dict:
    """Per model: parameters, fmnist and reference training images/s and test accuracy, inference speed."""
    dev = resolve_device(device)
    dtype = autocast_dtype(dev, "auto")
    out: dict = {"device": str(dev), "autocast": str(dtype) if dtype else "fp32", "train_images": len(ds.train),
                 "epochs": epochs, "batch_size": batch_size, "models": {}}
    # every setting checked before the table starts, so bad input is one line with no header above it
    configs = {name: TrainConfig(model=model_info(name).name, epochs=epochs, batch_size=batch_size, lr=1e-3,
                                 device=str(dev)) for name in models}
    log(f"{'':<16}{'':>9}  {'train images/s':^25}  {'test accuracy':^15}  {'batch-1 ms':^13}  {'batch-1024 img/s':^17}")
    log(f"{'model':<16}{'params':>9}  {'fmnist':>8}{'reference':>10}{'ratio':>7}  {'fmnist':>7}{'ref':>8}  "
        f"{'fmnist':>6}{'ref':>7}  {'fmnist':>8}{'ref':>9}")
    for name, cfg in configs.items():
        torch.manual_seed(0)
        m = create_model(name)
        h = fit(m, ds.train, None, cfg, progress=False, log=lambda *_: None)
        r = {"parameters": count_parameters(m), "fmnist_train_images_per_s": h.images_per_second,
             "fmnist_test_accuracy": _test_acc(m, ds, dtype)}
        r.update({f"fmnist_{k}": v for k, v in inference_speed(m, ds, dtype).items()})
        torch.manual_seed(0)
        ref = create_model(name)
        r["reference_train_images_per_s"] = reference_fit(ref, ds.train.images, ds.train.labels, epochs,
                                                          batch_size, 1e-3, 0, dev)
        r["reference_test_accuracy"] = _test_acc(ref, ds, None)
        r.update({f"reference_{k}": v for k, v in inference_speed(ref, ds, None).items()})
        r["train_speedup"] = r["fmnist_train_images_per_s"] / r["reference_train_images_per_s"]
        out["models"][name] = r
        log(f"{name:<16}{r['parameters']:>9,}  {r['fmnist_train_images_per_s']:>8,.0f}"
            f"{r['reference_train_images_per_s']:>10,.0f}{r['train_speedup']:>6.2f}x  "
            f"{r['fmnist_test_accuracy']:>7.4f}{r['reference_test_accuracy']:>8.4f}  "
            f"{r['fmnist_batch1_latency_ms']:>6.2f}{r['reference_batch1_latency_ms']:>7.2f}  "
            f"{r['fmnist_batch_throughput']:>8,.0f}{r['reference_batch_throughput']:>9,.0f}")
    return out


THRESHOLDS = (0.90, 0.91, 0.92, 0.93, 0.94, 0.95)


def time_to_accuracy(ds: Dataset, preset: str = "best", seeds: int = 1, device: str = "auto",
                     thresholds: tuple[float, ...] = THRESHOLDS, log: Any = print) -> dict:
    """Train a preset `seeds` times; after each epoch, test accuracy and the training time so far.

    The test set is only measured here, never used to choose anything; the time spent measuring it is left out
    of the training time. Returns per-seed curves, the first time each threshold was reached, and the final test
    accuracy and training time as mean ± std over the seeds.
    """
    if ds.test is None:
        raise FmnistError("--time-to-accuracy needs a test split")
    p = get_preset(preset)
    runs = [_timed_run(ds, p, seed, device, thresholds, log) for seed in range(seeds)]
    acc = [r["final_test_accuracy"] for r in runs]
    secs = [r["train_seconds"] for r in runs]
    return {"preset": preset, "model": p.model, "target": p.target, "config": p.config,
            "model_params": p.model_params, "seeds": seeds,
            "train_images": len(ds.train), "runs": runs,
            "test_accuracy": {"mean": statistics.fmean(acc), "std": statistics.stdev(acc) if seeds > 1 else 0.0},
            "train_seconds": {"mean": statistics.fmean(secs), "std": statistics.stdev(secs) if seeds > 1 else 0.0}}


def _timed_run(ds: Dataset, p: Preset, seed: int, device: str, thresholds: tuple[float, ...], log: Any) -> dict:
    cfg = dataclasses.replace(TrainConfig.for_model(p.name), seed=seed, device=device)
    tr, va = holdout_split(ds.train.labels, cfg.val_fraction, cfg.seed)
    torch.manual_seed(seed)
    model = create_model(p.model, num_classes=len(ds.class_names), **cfg.model_params)
    curve: list[dict] = []
    clock = {"start": time.perf_counter(), "measuring": 0.0}

    def on_epoch(h: History) -> None:
        epoch, t = h.epoch[-1], time.perf_counter()
        trained = t - clock["start"] - clock["measuring"]
        logits = numpy_logits(model, ds.test.images, tta=cfg.tta_views, precision="auto")
        acc = float((logits.argmax(1) == ds.test.labels).mean())
        model.train()
        curve.append({"epoch": epoch, "train_seconds": trained, "test_accuracy": acc})
        clock["measuring"] += time.perf_counter() - t
        log(f"{p.name} seed {seed}: epoch {epoch}/{cfg.epochs}  {trained:6.1f}s  test acc {acc:.4f}")

    fit(model, ds.train.take(tr), ds.train.take(va), cfg, progress=False, log=lambda *_: None, on_epoch=on_epoch)
    reached = {f"{th:.0%}": next((c["train_seconds"] for c in curve if c["test_accuracy"] >= th), None)
               for th in thresholds}
    return {"seed": seed, "curve": curve, "reached": reached, "final_test_accuracy": curve[-1]["test_accuracy"],
            "train_seconds": curve[-1]["train_seconds"]}


def format_time_to_accuracy(r: dict) -> str:
    """A table: per seed, the training seconds at which each threshold was first reached; then mean ± std."""
    ths = list(r["runs"][0]["reached"])
    lines = [f"preset {r['preset']} ({r['model']}; target: {r['target']})",
             f"{'seed':>5}" + "".join(f"{t:>8}" for t in ths) + f"{'final acc':>11}{'train s':>9}"]
    for run in r["runs"]:
        lines.append(f"{run['seed']:>5}" + "".join(f"{'-' if v is None else f'{v:.0f}s':>8}"
                                                   for v in run["reached"].values())
                     + f"{run['final_test_accuracy']:>11.4f}{run['train_seconds']:>9.0f}")
    a, s = r["test_accuracy"], r["train_seconds"]
    lines.append(f"test accuracy {a['mean']:.4f} ± {a['std']:.4f}, training time {s['mean']:.0f} ± {s['std']:.0f} s "
                 f"over {r['seeds']} seed(s)")
    return "\n".join(lines)


def time_to_reference(ds: Dataset, preset: str = "fast", reference_model: str = "cnn_bn",
                      timed_epochs: int = 2, device: str = "auto", log: Any = print) -> dict:
    """The time to reach a reference project's best published figure (model_info(reference_model)
    .reference: 91.37% for reference project 002's CNN 2) two ways, measured side by side in one run: fmnist's preset
    (test accuracy after each epoch; the first epoch at or above the figure) and the reference recipe in the plain
    PyTorch loop (its epochs as published, e.g. Adam 1e-4, batch 64, 50 epochs), whose total is estimated from
    `timed_epochs` timed epochs: seconds per epoch x the recipe's epochs. The test set chooses nothing here."""
    if ds.test is None:
        raise FmnistError("--time-to-reference needs a test split")
    if timed_epochs < 1:
        raise FmnistError(f"--timed-epochs must be at least 1, got {timed_epochs}")
    info = model_info(reference_model)
    if info.reference is None:
        raise FmnistError(f"model '{reference_model}' has no published reference figure")
    target, recipe = info.reference.accuracy, info.recipe
    dev = resolve_device(device)
    fm = _timed_run(ds, get_preset(preset), 0, device, (target,), log)
    fm_seconds = next((c["train_seconds"] for c in fm["curve"] if c["test_accuracy"] >= target), None)
    torch.manual_seed(0)
    ref = create_model(reference_model, num_classes=len(ds.class_names))
    t0 = time.perf_counter()
    reference_fit(ref, ds.train.images, ds.train.labels, timed_epochs, recipe["batch_size"], recipe["lr"], 0, dev)
    per_epoch = (time.perf_counter() - t0) / timed_epochs
    ref_acc = _test_acc(ref, ds, None)
    log(f"plain loop, {reference_model} ({recipe}): {per_epoch:.1f} s an epoch; test accuracy after {timed_epochs} "
        f"epoch(s) {ref_acc:.4f}")
    estimate = per_epoch * recipe["epochs"]
    return {"target": target, "reference_model": reference_model, "reference_recipe": recipe, "preset": preset,
            "fmnist_seconds_to_target": fm_seconds, "fmnist_curve": fm["curve"],
            "fmnist_final_test_accuracy": fm["final_test_accuracy"], "reference_seconds_per_epoch": per_epoch,
            "reference_timed_epochs": timed_epochs, "reference_test_accuracy_after_timed": ref_acc,
            "reference_seconds_estimated": estimate,
            "speedup": None if fm_seconds is None else estimate / fm_seconds,
            "note": f"the reference time is estimated: {timed_epochs} timed epoch(s) x the {recipe['epochs']} epochs "
                    "after which the reference project published its figure"}


def format_time_to_reference(r: dict) -> str:
    """Two lines and the ratio."""
    fm = r["fmnist_seconds_to_target"]
    lines = [f"time to {r['target']:.2%} test accuracy (the best figure of the reference projects):",
             f"  fmnist preset {r['preset']}: " + (f"{fm:.0f} s of training" if fm is not None else
                                                   f"not reached ({r['fmnist_final_test_accuracy']:.2%} at the end)"),
             f"  {r['reference_model']} with the reference recipe in the plain PyTorch loop: ~"
             f"{r['reference_seconds_estimated']:.0f} s ({r['reference_seconds_per_epoch']:.1f} s an epoch x "
             f"{r['reference_recipe']['epochs']} epochs; estimated from {r['reference_timed_epochs']} timed)"]
    if r["speedup"] is not None:
        lines.append(f"  fmnist is {r['speedup']:.1f}x faster to the reference's best figure")
    return "\n".join(lines)


BENCH_MODES = (None, "time_to_accuracy", "time_to_reference")


def bench_options(mode: str | None, models: str | None = None, epochs: int | None = None,
                  batch_size: int | None = None, seeds: int | None = None, timed_epochs: int | None = None,
                  preset: str | None = None) -> dict[str, Any]:
    """The settings of one bench mode (None: the plain bench; "time_to_accuracy"; "time_to_reference") with their
    defaults. Each option belongs to one mode: one given to another would be ignored without a word, so it is
    refused in one line."""
    if mode not in BENCH_MODES:
        raise FmnistError(f"bench mode {mode!r} unknown; choose time_to_accuracy, time_to_reference or none")
    flag = {None: "the plain bench", "time_to_accuracy": "--time-to-accuracy",
            "time_to_reference": "--time-to-reference"}
    belongs = {"--models": (models, (None,)), "--epochs": (epochs, (None,)), "--batch-size": (batch_size, (None,)),
               "--seeds": (seeds, ("time_to_accuracy",)), "--timed-epochs": (timed_epochs, ("time_to_reference",)),
               "--preset": (preset, ("time_to_accuracy", "time_to_reference"))}
    for name, (value, modes) in belongs.items():
        if value is not None and mode not in modes:
            where = " or ".join(flag[m] if m else "the plain bench" for m in modes)
            raise FmnistError(f"{name} applies only {'to' if modes == (None,) else 'with'} {where}, not "
                              f"{'to' if mode is None else 'with'} {flag[mode]}")
    if seeds is not None and seeds < 1:
        raise FmnistError(f"--seeds must be at least 1, got {seeds}")
    if mode == "time_to_reference":
        return {"preset": preset or "fast", "timed_epochs": 2 if timed_epochs is None else timed_epochs}
    if mode == "time_to_accuracy":
        return {"preset": preset or "best", "seeds": 1 if seeds is None else seeds}
    return {"models": (models or "lenet5,cnn_basic").split(","), "epochs": 1 if epochs is None else epochs,
            "batch_size": 128 if batch_size is None else batch_size}


def run_bench(ds: Dataset, mode: str | None = None, device: str = "auto", **options: Any) -> tuple[dict, str]:
    """One bench mode (see `bench_options`) on `ds`: its result (with provenance) and the text to print."""
    from fmnist.run import provenance

    settings = bench_options(mode, **options)
    if mode == "time_to_reference":
        res = time_to_reference(ds, device=device, **settings)
        text = format_time_to_reference(res)
    elif mode == "time_to_accuracy":
        res = time_to_accuracy(ds, device=device, **settings)
        text = format_time_to_accuracy(res)
    else:
        res, text = bench(ds, device=device, **settings), ""
    return {**res, "provenance": provenance()}, text
