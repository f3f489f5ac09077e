"""`fmnist bench`: training and inference speed of fmnist's loop beside the plain PyTorch loop a user would write.

Both are measured in the same process, one after the other, on the same data, so their ratio is meaningful on a
noisy shared machine; absolute figures are not.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fmnist.config import TrainConfig
from fmnist.data import Dataset, holdout_split, to_input
from fmnist.errors import FmnistError
from fmnist.inference import autocast_dtype, numpy_logits, predict_logits, resolve_device
from fmnist.loop import History, fit
from fmnist.metrics import accuracy
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
    return accuracy(ds.test.labels, numpy_logits(model, ds.test.images, precision="fp32" if dtype is None else "auto"))


@dataclass(frozen=True)
class Speed:
    """Inference speed of one model: batch-1 latency (median ms) and large-batch throughput (images/s)."""

    batch1_latency_ms: float
    batch_throughput: float


def inference_speed(model: torch.nn.Module, ds: Dataset, dtype: torch.dtype | None) -> Speed:
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
    return Speed(1000 * statistics.median(times), len(x) / (time.perf_counter() - t))


@dataclass(frozen=True)
class LoopFigures:
    """One loop's figures for one model: training throughput, test accuracy after the epochs, inference speed."""

    train_images_per_s: float
    test_accuracy: float
    speed: Speed


@dataclass(frozen=True)
class ModelBench:
    """One model trained by fmnist's loop and by the plain PyTorch loop, side by side."""

    parameters: int
    fmnist: LoopFigures
    reference: LoopFigures

    @property
    def train_speedup(self) -> float:
        return self.fmnist.train_images_per_s / self.reference.train_images_per_s

    def to_dict(self) -> dict[str, Any]:
        """bench.json's row: flat keys (fmnist_..., reference_..., train_speedup)."""
        d: dict[str, Any] = {"parameters": self.parameters}
        for who, f in (("fmnist", self.fmnist), ("reference", self.reference)):
            d |= {f"{who}_train_images_per_s": f.train_images_per_s, f"{who}_test_accuracy": f.test_accuracy,
                  f"{who}_batch1_latency_ms": f.speed.batch1_latency_ms,
                  f"{who}_batch_throughput": f.speed.batch_throughput}
        return {**d, "train_speedup": self.train_speedup}


@dataclass(frozen=True)
class MachineSpeed:
    """How fast this machine trains a preset's model, against what its processor could do at most.

    step_gflop: floating-point operations of one training step (forward and backward, counted by PyTorch's
    FlopCounterMode: 2 per multiply-add); achieved_gflops: that over the measured step time. peak_gflops: the
    CPU's FP32 peak, cores x SIMD lanes x 2 (a fused multiply-add) x FMA units x clock, None on a GPU;
    peak_basis says what it was computed from.
    """

    preset: str
    model: str
    batch_size: int
    precision: str  # what the step ran in: bf16 where the hardware has it, as fmnist trains
    train_images_per_s: float
    step_seconds: float
    step_gflop: float
    achieved_gflops: float
    peak_gflops: float | None
    peak_basis: str

    @property
    def fraction_of_peak(self) -> float | None:
        return self.achieved_gflops / self.peak_gflops if self.peak_gflops else None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fraction_of_peak": self.fraction_of_peak}

    def describe(self) -> str:
        peak = (f" of a {self.peak_gflops:,.0f} GFLOP/s FP32 peak ({self.fraction_of_peak:.0%}; {self.peak_basis})"
                if self.peak_gflops else f" ({self.peak_basis})")
        bf16 = ("; the step ran in bf16, whose matrix units are not bound by the FP32 peak"
                if self.precision == "bf16" and self.peak_gflops else "")
        return (f"machine: preset {self.preset} ({self.model}) trains {self.train_images_per_s:,.0f} images/s, "
                f"{1000 * self.step_seconds:.0f} ms a step of {self.batch_size} in {self.precision}: "
                f"{self.step_gflop:.1f} GFLOP a step, {self.achieved_gflops:,.0f} GFLOP/s{peak}{bf16}")


def cpu_peak_gflops() -> tuple[float | None, str]:
    """The CPU's theoretical FP32 peak in GFLOP/s and what it was computed from (None where the clock or the
    vector width cannot be read). Two FMA units a core is assumed: a server core's count; a core with one
    reaches half."""
    import os
    from pathlib import Path

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo to read the vector width and clock from"
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    lanes, isa = (16, "AVX-512") if "avx512f" in flags else (8, "AVX2+FMA") if {"avx2", "fma"} <= flags else (4, "SSE")
    try:  # the highest clock the kernel reports; virtual machines often give only /proc/cpuinfo's
        mhz: float | None = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        mhz = None
    if mhz is None:
        mhz = next((float(ln.split(":", 1)[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")), None)
    if not mhz:
        return None, f"{cores} cores, {isa}, clock unknown"
    peak = cores * lanes * 2 * 2 * mhz / 1000
    return peak, f"{cores} cores x {lanes} {isa} lanes x 2 (FMA) x 2 FMA units x {mhz / 1000:.2f} GHz"


def machine_speed(ds: Dataset, preset: str = "fast", device: str = "auto") -> MachineSpeed:
    """Time a few training steps of a preset's model (fmnist.budget.measure_costs, as a time budget plans from)
    and count their FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from fmnist.budget import measure_costs

    p = get_preset(preset)
    dev = resolve_device(device)
    cfg = dataclasses.replace(TrainConfig.for_model(preset), device=str(dev))
    bs = min(cfg.batch_size, len(ds.train))
    torch.manual_seed(0)
    model = create_model(p.model, num_classes=ds.num_classes, **cfg.model_params)
    step = measure_costs(model, cfg, ds.train, None).step_seconds
    model.to(dev).train()
    x = to_input(ds.train.images[:bs], dev)
    y = torch.as_tensor(ds.train.labels[:bs], device=dev)
    with FlopCounterMode(display=False) as counter:  # the work of a step does not depend on the weights
        F.cross_entropy(model(x), y).backward()
    gflop = counter.get_total_flops() / 1e9
    peak, basis = cpu_peak_gflops() if dev.type == "cpu" else (None, f"{dev.type}: no peak computed")
    dtype = autocast_dtype(dev, cfg.precision)
    return MachineSpeed(preset, p.model, bs, "bf16" if dtype == torch.bfloat16 else "fp16" if dtype == torch.float16
                        else "fp32", bs / step, step, gflop, gflop / step, peak, basis)


@dataclass(frozen=True)
class Bench:
    """`fmnist bench`: every model's figures, and the setting they were measured in."""

    device: str
    autocast: str
    train_images: int
    epochs: int
    batch_size: int
    models: dict[str, ModelBench]
    machine: MachineSpeed | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ("models", "machine")},
                "models": {k: v.to_dict() for k, v in self.models.items()},
                "machine": self.machine.to_dict() if self.machine else None}


def bench(ds: Dataset, models: list[str], epochs: int = 1, batch_size: int = 128, device: str = "auto",
          log: Any = print) -> Bench:
    """Per model: parameters, fmnist and reference training images/s and test accuracy, inference speed."""
    dev = resolve_device(device)
    dtype = autocast_dtype(dev, "auto")
    # every setting checked before the table starts, so bad input is one line with no header above it
    configs = {name: TrainConfig(model=model_info(name).name, epochs=epochs, batch_size=batch_size, lr=1e-3,
                                 device=str(dev)) for name in models}
    log(f"{'':<16}{'':>9}  {'train images/s':^25}  {'test accuracy':^15}  {'batch-1 ms':^13}  {'batch-1024 img/s':^17}")
    log(f"{'model':<16}{'params':>9}  {'fmnist':>8}{'reference':>10}{'ratio':>7}  {'fmnist':>7}{'ref':>8}  "
        f"{'fmnist':>6}{'ref':>7}  {'fmnist':>8}{'ref':>9}")
    rows = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        m = create_model(name, num_classes=ds.num_classes)
        h = fit(m, ds.train, None, cfg, progress=False, log=lambda *_: None)
        fm = LoopFigures(h.images_per_second, _test_acc(m, ds, dtype), inference_speed(m, ds, dtype))
        torch.manual_seed(0)
        ref = create_model(name, num_classes=ds.num_classes)
        per_s = reference_fit(ref, ds.train.images, ds.train.labels, epochs, batch_size, 1e-3, 0, dev)
        r = rows[name] = ModelBench(count_parameters(m), fm, LoopFigures(per_s, _test_acc(ref, ds, None),
                                                                          inference_speed(ref, ds, None)))
        log(f"{name:<16}{r.parameters:>9,}  {fm.train_images_per_s:>8,.0f}"
            f"{r.reference.train_images_per_s:>10,.0f}{r.train_speedup:>6.2f}x  "
            f"{fm.test_accuracy:>7.4f}{r.reference.test_accuracy:>8.4f}  "
            f"{fm.speed.batch1_latency_ms:>6.2f}{r.reference.speed.batch1_latency_ms:>7.2f}  "
            f"{fm.speed.batch_throughput:>8,.0f}{r.reference.speed.batch_throughput:>9,.0f}")
    machine = machine_speed(ds, device=str(dev))
    log(machine.describe())
    return Bench(str(dev), str(dtype) if dtype else "fp32", len(ds.train), epochs, batch_size, rows, machine)


THRESHOLDS = (0.90, 0.91, 0.92, 0.93, 0.94, 0.95)


@dataclass(frozen=True)
class CurvePoint:
    """Test accuracy after an epoch, and the training time so far (time spent measuring left out)."""

    epoch: int
    train_seconds: float
    test_accuracy: float


@dataclass(frozen=True)
class TimedRun:
    """One seed of a preset, measured after every epoch."""

    seed: int
    curve: list[CurvePoint]
    reached: dict[str, float | None]  # threshold ("93%") -> training seconds when first reached (None: never)

    @property
    def final_test_accuracy(self) -> float:
        return self.curve[-1].test_accuracy

    @property
    def train_seconds(self) -> float:
        return self.curve[-1].train_seconds

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "curve": [dataclasses.asdict(c) for c in self.curve], "reached": self.reached,
                "final_test_accuracy": self.final_test_accuracy, "train_seconds": self.train_seconds}


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation over seeds (0 for one seed)."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass(frozen=True)
class TimeToAccuracy:
    """`fmnist bench --time-to-accuracy`: a preset trained over seeds, its curves and their spread."""

    preset: str
    model: str
    target: str
    config: dict[str, Any]
    model_params: dict[str, Any]
    train_images: int
    runs: list[TimedRun]

    @property
    def test_accuracy(self) -> Spread:
        return Spread.of([r.final_test_accuracy for r in self.runs])

    @property
    def train_seconds(self) -> Spread:
        return Spread.of([r.train_seconds for r in self.runs])

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "runs"},
                "seeds": len(self.runs), "runs": [r.to_dict() for r in self.runs],
                "test_accuracy": dataclasses.asdict(self.test_accuracy),
                "train_seconds": dataclasses.asdict(self.train_seconds)}


def time_to_accuracy(ds: Dataset, preset: str = "best", seeds: int = 1, device: str = "auto",
                     thresholds: tuple[float, ...] = THRESHOLDS, log: Any = print) -> TimeToAccuracy:
    """Train a preset `seeds` times; after each epoch, test accuracy and the training time so far.

    The test set is only measured here, never used to choose anything; the time spent measuring it is left out
    of the training time. The result holds per-seed curves, the first time each threshold was reached, and the
    final test accuracy and training time as mean ± std over the seeds.
    """
    if ds.test is None:
        raise FmnistError("--time-to-accuracy needs a test split")
    p = get_preset(preset)
    runs = [_timed_run(ds, p, seed, device, thresholds, log) for seed in range(seeds)]
    return TimeToAccuracy(preset, p.model, p.target, p.config, p.model_params, len(ds.train), runs)


def _timed_run(ds: Dataset, p: Preset, seed: int, device: str, thresholds: tuple[float, ...], log: Any) -> TimedRun:
    cfg = dataclasses.replace(TrainConfig.for_model(p.name), seed=seed, device=device)
    tr, va = holdout_split(ds.train.labels, cfg.val_fraction, cfg.seed)
    torch.manual_seed(seed)
    model = create_model(p.model, num_classes=len(ds.class_names), **cfg.model_params)
    curve: list[CurvePoint] = []
    clock = {"start": time.perf_counter(), "measuring": 0.0}

    def on_epoch(h: History) -> None:
        epoch, t = h.epoch[-1], time.perf_counter()
        trained = t - clock["start"] - clock["measuring"]
        acc = accuracy(ds.test.labels, numpy_logits(model, ds.test.images, tta=cfg.tta_views, precision="auto"))
        model.train()
        curve.append(CurvePoint(epoch, trained, acc))
        clock["measuring"] += time.perf_counter() - t
        log(f"{p.name} seed {seed}: epoch {epoch}/{cfg.epochs}  {trained:6.1f}s  test acc {acc:.4f}")

    fit(model, ds.train.take(tr), ds.train.take(va), cfg, progress=False, log=lambda *_: None, on_epoch=on_epoch)
    reached = {f"{th:.0%}": next((c.train_seconds for c in curve if c.test_accuracy >= th), None)
               for th in thresholds}
    return TimedRun(seed, curve, reached)


def format_time_to_accuracy(r: TimeToAccuracy) -> str:
    """A table: per seed, the training seconds at which each threshold was first reached; then mean ± std."""
    ths = list(r.runs[0].reached)
    lines = [f"preset {r.preset} ({r.model}; target: {r.target})",
             f"{'seed':>5}" + "".join(f"{t:>8}" for t in ths) + f"{'final acc':>11}{'train s':>9}"]
    for run in r.runs:
        lines.append(f"{run.seed:>5}" + "".join(f"{'-' if v is None else f'{v:.0f}s':>8}" for v in run.reached.values())
                     + f"{run.final_test_accuracy:>11.4f}{run.train_seconds:>9.0f}")
    a, s = r.test_accuracy, r.train_seconds
    lines.append(f"test accuracy {a.mean:.4f} ± {a.std:.4f}, training time {s.mean:.0f} ± {s.std:.0f} s "
                 f"over {len(r.runs)} seed(s)")
    return "\n".join(lines)


@dataclass(frozen=True)
class TimeToReference:
    """`fmnist bench --time-to-reference`: the training time to a reference project's best figure, fmnist's
    preset against the reference recipe in the plain loop (whose total is estimated from timed epochs)."""

    target: float
    reference_model: str
    reference_recipe: dict[str, Any]
    preset: str
    fmnist_seconds_to_target: float | None  # None: the preset never reached it
    fmnist_curve: list[CurvePoint]
    fmnist_final_test_accuracy: float
    reference_seconds_per_epoch: float
    reference_timed_epochs: int
    reference_test_accuracy_after_timed: float

    @property
    def reference_seconds_estimated(self) -> float:
        return self.reference_seconds_per_epoch * self.reference_recipe["epochs"]

    @property
    def speedup(self) -> float | None:
        s = self.fmnist_seconds_to_target
        return None if s is None else self.reference_seconds_estimated / s

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "reference_seconds_estimated": self.reference_seconds_estimated,
                "speedup": self.speedup,
                "note": f"the reference time is estimated: {self.reference_timed_epochs} timed epoch(s) x the "
                        f"{self.reference_recipe['epochs']} epochs after which the reference project published "
                        "its figure"}


def time_to_reference(ds: Dataset, preset: str = "fast", reference_model: str = "cnn_bn",
                      timed_epochs: int = 2, device: str = "auto", log: Any = print) -> TimeToReference:
    """The time to reach a reference project's best published figure (model_info(reference_model).reference:
    91.37% for reference project 002's CNN 2) two ways, measured side by side in one run: fmnist's preset (test
    accuracy after each epoch; the first epoch at or above the figure) and the reference recipe in the plain
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
    torch.manual_seed(0)
    ref = create_model(reference_model, num_classes=len(ds.class_names))
    t0 = time.perf_counter()
    reference_fit(ref, ds.train.images, ds.train.labels, timed_epochs, recipe["batch_size"], recipe["lr"], 0, dev)
    per_epoch = (time.perf_counter() - t0) / timed_epochs
    ref_acc = _test_acc(ref, ds, None)
    log(f"plain loop, {reference_model} ({recipe}): {per_epoch:.1f} s an epoch; test accuracy after {timed_epochs} "
        f"epoch(s) {ref_acc:.4f}")
    return TimeToReference(target, reference_model, recipe, preset, next(iter(fm.reached.values())), fm.curve,
                           fm.final_test_accuracy, per_epoch, timed_epochs, ref_acc)


def format_time_to_reference(r: TimeToReference) -> str:
    """Two lines and the ratio."""
    fm = r.fmnist_seconds_to_target
    lines = [f"time to {r.target:.2%} test accuracy (the best figure of the reference projects):",
             f"  fmnist preset {r.preset}: " + (f"{fm:.0f} s of training" if fm is not None else
                                                f"not reached ({r.fmnist_final_test_accuracy:.2%} at the end)"),
             f"  {r.reference_model} with the reference recipe in the plain PyTorch loop: ~"
             f"{r.reference_seconds_estimated:.0f} s ({r.reference_seconds_per_epoch:.1f} s an epoch x "
             f"{r.reference_recipe['epochs']} epochs; estimated from {r.reference_timed_epochs} timed)"]
    if r.speedup is not None:
        lines.append(f"  fmnist is {r.speedup:.1f}x faster to the reference's best figure")
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


def run_bench(ds: Dataset, mode: str | None = None, device: str = "auto",
              **options: Any) -> tuple[Bench | TimeToAccuracy | TimeToReference, str]:
    """One bench mode (see `bench_options`) on `ds`: its typed result and the text to print (`bench_json` gives
    what bench.json holds)."""
    settings = bench_options(mode, **options)
    if mode == "time_to_reference":
        res = time_to_reference(ds, device=device, **settings)
        return res, format_time_to_reference(res)
    if mode == "time_to_accuracy":
        res = time_to_accuracy(ds, device=device, **settings)
        return res, format_time_to_accuracy(res)
    return bench(ds, device=device, **settings), ""


def bench_json(result: Bench | TimeToAccuracy | TimeToReference) -> dict[str, Any]:
    """What bench.json holds: the result with the code's and the machine's provenance."""
    from fmnist.run import provenance

    return {**result.to_dict(), "provenance": provenance()}
