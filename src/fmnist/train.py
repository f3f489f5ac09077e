"""The one training loop, its config, learning-rate schedules, batch augmentation and checkpoints."""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmnist.data import MEAN, STD, Split, to_input
from fmnist.errors import FmnistError
from fmnist.files import atomic_path, dumps

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTATIONS = ("crop", "flip", "rotate", "erase")
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Saved as config.json next to its results."""

    model: str = "lenet5"  # a name from list_models()
    model_params: dict[str, Any] = field(default_factory=dict)  # factory arguments, e.g. {"activation": "tanh"}
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw | sgd | rmsprop
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd and rmsprop
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0  # decoupled for adamw, coupled (PyTorch's) otherwise
    l2: float = 0.0  # Keras-style L2 penalty: l2 * sum of squared dense/conv weights, added to the loss
    label_smoothing: float = 0.0
    schedule: str = "constant"  # constant | cosine | onecycle
    warmup_epochs: float = 0.0  # linear warmup for constant/cosine (onecycle warms up over 25% of steps)
    patience: int = 0  # early stopping on validation loss after this many epochs without improvement; 0 = off
    val_fraction: float = 0.2  # stratified holdout of the training data for validation; 0 = train on all
    augment: str = ""  # comma list of crop, flip, rotate, erase
    ema: float = 0.0  # exponential moving average of weights, e.g. 0.999; 0 = off
    tta: bool = False  # test-time augmentation: average logits of the image and its mirror
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp32
    channels_last: bool = True  # NHWC activations: 2-3x faster convolutions and pooling on CPU (oneDNN)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise FmnistError(f"optimizer '{self.optimizer}' unknown; choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise FmnistError(f"schedule '{self.schedule}' unknown; choose from {', '.join(SCHEDULES)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise FmnistError(f"precision '{self.precision}' unknown; choose from auto, bf16, fp32")
        check_device(self.device)
        for f in fields(self):  # types first: a library caller may pass "0.1" or None
            v = getattr(self, f.name)
            want = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(f.type)
            if want and (not isinstance(v, want) or (isinstance(v, bool) and f.type != "bool")):
                raise FmnistError(f"{f.name} must be {'a number' if f.type == 'float' else f'a {f.type}'}, "
                                  f"got {v!r}")
            if f.type == "float" and not math.isfinite(v):
                raise FmnistError(f"{f.name} must be a finite number, got {v}")
        if not isinstance(self.model_params, dict):
            raise FmnistError(f"model_params must be a dict, got {self.model_params!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise FmnistError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise FmnistError(f"lr must be positive, got {self.lr}")
        for name in ("weight_decay", "l2", "warmup_epochs", "patience", "momentum"):
            if getattr(self, name) < 0:
                raise FmnistError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.momentum >= 1:
            raise FmnistError(f"momentum must be below 1, got {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise FmnistError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.val_fraction < 1:
            raise FmnistError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.patience and self.val_fraction == 0:
            raise FmnistError("patience (early stopping) needs a validation split: set val_fraction above 0")
        if not 0 <= self.ema < 1:
            raise FmnistError(f"ema must be in [0, 1), got {self.ema}")
        bad = [a for a in augment_ops(self.augment) if a not in AUGMENTATIONS]
        if bad:
            raise FmnistError(f"augmentation '{bad[0]}' unknown; choose from {', '.join(AUGMENTATIONS)}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a dict (config.json), ignoring keys it does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict."""
        return asdict(self)


def augment_ops(spec: str) -> list[str]:
    """'crop, flip' -> ['crop', 'flip']."""
    return [s.strip() for s in spec.split(",") if s.strip()]


@dataclass
class History:
    """Per-epoch curves and how the run ended."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time of each epoch (training + validation)
    lr: list[float] = field(default_factory=list)  # learning rate at the end of each epoch
    best_epoch: int = 0  # epoch of lowest validation loss
    restored_best: bool = False  # weights are those of best_epoch (early stopping)
    stopped_early: bool = False
    interrupted: bool = False
    train_seconds: float = 0.0
    images_per_second: float = 0.0  # training throughput

    def as_dict(self) -> dict:
        """As a JSON-ready dict."""
        return asdict(self)

    def to_csv(self, path: str | os.PathLike) -> None:
        """history.csv: epoch, train_loss, train_acc, val_loss, val_acc, seconds, lr (atomically)."""
        cols = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr")
        lines = [",".join(cols)]
        for i in range(len(self.epoch)):
            # an empty cell, not "nan", where a run had no validation split
            lines.append(",".join(str(self.epoch[i]) if c == "epoch" else
                                  f"{getattr(self, c)[i]:.6g}" if math.isfinite(getattr(self, c)[i]) else ""
                                  for c in cols))
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------- device, precision
def check_device(name: str) -> None:
    """A one-line error unless `name` is auto, cpu, cuda or cuda:N."""
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise FmnistError(f"device '{name}' unknown; choose from auto, cpu, cuda (or cuda:N)")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FmnistError("--device cuda asked for, but PyTorch sees no CUDA GPU (use --device auto or cpu)")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 for autocast when asked for or (auto) when the hardware runs it natively; None for fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
    else:
        ok = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                  or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    if precision == "bf16" or ok:
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# ------------------------------------------------------------------------------------------------ schedule
def lr_at(step: int, total_steps: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total_steps`: a pure function."""
    t = step / max(1, total_steps)
    if config.schedule == "onecycle":  # linear up to the peak over 25% of the steps, then linear down to 0
        peak = 0.25
        return config.lr * (0.04 + 0.96 * t / peak if t < peak else max(0.0, (1 - t) / (1 - peak)))
    warm = config.warmup_epochs * steps_per_epoch
    if warm and step < warm:
        return config.lr * (step + 1) / warm
    if config.schedule == "cosine":
        tt = (step - warm) / max(1, total_steps - warm)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, tt)))
    return config.lr


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named in the config; Adam, AdamW and SGD use PyTorch's fused (one kernel) update."""
    fused = params[0].device.type in ("cpu", "cuda") or None
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay, fused=fused)
    return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


# ---------------------------------------------------------------------------------------------- augmentation
_ZERO = -MEAN / STD  # the normalized value of a black (0) pixel


def augment_batch(x: torch.Tensor, ops: list[str], g: torch.Generator) -> torch.Tensor:
    """Augment a whole normalized batch (B, 1, 28, 28) with tensor ops; one random draw per image."""
    b = x.shape[0]
    dev = x.device
    if "flip" in ops:
        flip = torch.rand(b, generator=g, device="cpu").to(dev) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    if "rotate" in ops or "crop" in ops:
        # one affine grid for rotation (+-10 degrees) and translation (+-2 px): the random shift of a
        # pad-2 random crop, without materializing the padded batch
        ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(10) if "rotate" in ops else torch.zeros(b)
        shift = (torch.randint(-2, 3, (b, 2), generator=g).float() * (2 / 28)) if "crop" in ops \
            else torch.zeros(b, 2)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
        mode = "bilinear" if "rotate" in ops else "nearest"
        x = F.grid_sample(x - _ZERO, grid, mode=mode, padding_mode="zeros", align_corners=False) + _ZERO
    if "erase" in ops:  # random erasing (p=0.5) of a rectangle of 2-16% of the image, filled with black
        hw = 28
        area = (torch.rand(b, generator=g) * 0.14 + 0.02) * hw * hw
        ratio = torch.exp((torch.rand(b, generator=g) * 2 - 1) * math.log(3))
        h = (area * ratio).sqrt().clamp(1, hw - 1).long()
        w = (area / ratio).sqrt().clamp(1, hw - 1).long()
        top = (torch.rand(b, generator=g) * (hw - h + 1).float()).long()
        left = (torch.rand(b, generator=g) * (hw - w + 1).float()).long()
        on = torch.rand(b, generator=g) < 0.5
        ar = torch.arange(hw)
        rows = (ar.view(1, hw) >= top.view(b, 1)) & (ar.view(1, hw) < (top + h).view(b, 1))
        cols = (ar.view(1, hw) >= left.view(b, 1)) & (ar.view(1, hw) < (left + w).view(b, 1))
        mask = (rows.view(b, hw, 1) & cols.view(b, 1, hw) & on.view(b, 1, 1)).to(dev)
        x = torch.where(mask.unsqueeze(1), torch.full_like(x, _ZERO), x)
    return x


# --------------------------------------------------------------------------------------------- the loop
def _l2_weights(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Linear | nn.Conv2d) and m.weight.requires_grad]


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048,
                   dtype: torch.dtype | None = None, tta: bool = False) -> torch.Tensor:
    """Logits (N, C) in fp32 for normalized inputs x (N, 1, 28, 28), in large batches, eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        with _autocast(device, dtype):
            out = model(xb).float()
            if tta:
                out = (out + model(xb.flip(3)).float()) / 2
        outs.append(out)
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 0)


def _frozen_features(model: nn.Module, augment: bool) -> bool:
    return bool(getattr(model, "frozen_backbone", False)) and not augment


def fit(model: nn.Module, train: Split, val: Split | None, config: TrainConfig,
        progress: bool = True, log: Any = print, on_epoch: Any = None,
        state_path: str | os.PathLike | None = None, resume: bool = False) -> History:
    """Train `model` on `train`, validating on `val` after each epoch. Returns the History.

    Ctrl-C stops after the current step and returns what was done (History.interrupted). With patience > 0,
    training stops when validation loss has not improved for that many epochs and the best weights are restored.
    `on_epoch(epoch, val_loss, val_acc)`, if given, is called after each epoch (a tuner prunes from it).
    With `state_path`, everything needed to continue (weights, optimizer, step, EMA, random states, history) is
    written there atomically after each epoch; `resume=True` continues from it, and on CPU with the same config
    ends with the same weights as a run that was never stopped.
    """
    from tqdm.auto import tqdm

    device = resolve_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(config.seed)
    ops = augment_ops(config.augment)

    x_tr = to_input(train.images, device)  # (N, 1, 28, 28) float, normalized
    y_tr = torch.as_tensor(train.labels, device=device)
    x_va = to_input(val.images, device) if val is not None and len(val) else None
    y_va = torch.as_tensor(val.labels, device=device) if x_va is not None else None

    net: nn.Module = model
    if _frozen_features(model, bool(ops)):
        # a frozen backbone is a fixed function: compute its features once, train the head on them
        t0 = time.perf_counter()
        x_tr = _features(model, x_tr, dtype)
        x_va = _features(model, x_va, dtype) if x_va is not None else None
        net = model.head
        log(f"backbone features computed once for {len(x_tr) + (len(x_va) if x_va is not None else 0):,} "
            f"images in {time.perf_counter() - t0:.1f}s ({x_tr.shape[1]} per image); training the head only")

    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise FmnistError(f"model '{config.model}' has no trainable parameters")
    opt = make_optimizer(params, config)
    l2 = config.l2 + float(getattr(model, "l2", 0.0))
    l2_params = _l2_weights(net) if l2 else []
    ema = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema)) if config.ema else None

    n = len(y_tr)
    bs = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * config.epochs
    hist = History()
    best_loss, best_state, since_best, step = math.inf, None, 0, 0
    seen, before = 0, 0.0  # images and seconds of training before this process (a resumed run)
    first = 1
    if resume:
        st = load_train_state(state_path, config)
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        if ema is not None and st["ema"] is not None:
            ema.load_state_dict(st["ema"])
        g.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        if device.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"], device)
        hist = History(**st["history"])
        best_loss, best_state, since_best = st["best_loss"], st["best_state"], st["since_best"]
        step, seen, before = st["step"], st["seen"], st["seconds"]
        first = len(hist.epoch) + 1
        log(f"resuming at epoch {first}/{config.epochs} (step {step:,}) from {state_path}")
    t_start = time.perf_counter()
    stop = hist.stopped_early
    try:
        for epoch in range(first, config.epochs + 1):
            if stop:
                break
            t_ep = time.perf_counter()
            net.train()
            perm = torch.randperm(n, generator=g).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", leave=False,
                       disable=not progress, unit="batch", dynamic_ncols=True)
            for i in bar:
                idx = perm[i * bs:(i + 1) * bs]
                xb, yb = x_tr[idx], y_tr[idx]
                if ops:
                    xb = augment_batch(xb, ops, g)
                if config.channels_last and xb.ndim == 4:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                lr = lr_at(step, total, config, steps_per_epoch)
                for group in opt.param_groups:
                    group["lr"] = lr
                with _autocast(device, dtype):
                    out = net(xb)
                    loss = F.cross_entropy(out.float(), yb, label_smoothing=config.label_smoothing)
                if l2_params:
                    loss = loss + l2 * sum(w.pow(2).sum() for w in l2_params)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    ema.update_parameters(net)
                step += 1
                seen += len(yb)
                loss_sum += loss.detach() * len(yb)  # no .item(): no host sync per step
                correct += (out.detach().argmax(1) == yb).sum()
                if progress and i % 25 == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() / min(n, (i + 1) * bs):.4f}",
                                    acc=f"{correct.item() / min(n, (i + 1) * bs):.4f}")
            bar.close()
            if ema is not None:
                _copy_ema(ema, net, x_tr[:4096], dtype)
            train_loss, train_acc = loss_sum.item() / n, correct.item() / n
            if x_va is not None:
                logits = predict_logits(net, x_va, dtype=dtype)
                val_loss = F.cross_entropy(logits, y_va).item()
                val_acc = (logits.argmax(1) == y_va).float().mean().item()
            else:
                val_loss = val_acc = float("nan")
            hist.epoch.append(epoch)
            hist.train_loss.append(train_loss)
            hist.train_acc.append(train_acc)
            hist.val_loss.append(val_loss)
            hist.val_acc.append(val_acc)
            hist.seconds.append(time.perf_counter() - t_ep)
            hist.lr.append(lr)
            if val_loss < best_loss:
                best_loss, since_best, hist.best_epoch = val_loss, 0, epoch
                if config.patience:
                    best_state = copy.deepcopy(net.state_dict())
            else:
                since_best += 1
            if config.patience and since_best >= config.patience:
                hist.stopped_early = stop = True
            if state_path is not None:
                hist.train_seconds = before + time.perf_counter() - t_start
                save_train_state(state_path, {
                    "config": config.to_dict(), "model": net.state_dict(), "optimizer": opt.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None, "generator": g.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "history": hist.as_dict(), "best_loss": best_loss, "best_state": best_state,
                    "since_best": since_best, "step": step, "seen": seen, "seconds": hist.train_seconds})
            # logged once the state is on disk: a run killed after this line resumes after this epoch
            log(f"epoch {epoch:>3}/{config.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                + (f"val loss {val_loss:.4f} acc {val_acc:.4f}" if x_va is not None else "(no validation split)")
                + f"  {hist.seconds[-1]:.1f}s" + ("  (best)" if hist.best_epoch == epoch and x_va is not None else ""))
            if on_epoch is not None:
                on_epoch(epoch, val_loss, val_acc)
            if stop:
                log(f"early stop: validation loss has not improved for {config.patience} epochs "
                    f"(best at epoch {hist.best_epoch})")
    except KeyboardInterrupt:
        hist.interrupted = True
        log(f"interrupted at epoch {len(hist.epoch) + 1}: keeping the {len(hist.epoch)} finished epoch(s)"
            + (f"; continue it with --resume (state in {state_path})" if state_path is not None else ""))
    hist.train_seconds = before + time.perf_counter() - t_start
    hist.images_per_second = seen / max(hist.train_seconds, 1e-9)
    if best_state is not None and hist.best_epoch != (hist.epoch[-1] if hist.epoch else 0):
        net.load_state_dict(best_state)
        hist.restored_best = True
        log(f"restored the weights of epoch {hist.best_epoch} (lowest validation loss {best_loss:.4f})")
    elif x_va is not None and hist.epoch and hist.best_epoch < hist.epoch[-1] - 2:
        log(f"note: validation loss was lowest at epoch {hist.best_epoch} and rose after it (overfitting); "
            f"--patience N stops early and keeps the best weights")
    model.eval()
    return hist


def _features(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), 512):
            with _autocast(device, dtype):
                out.append(model.features(x[i:i + 512]).float())
    return torch.cat(out).clone()  # clone: a normal tensor, usable in autograd


@torch.no_grad()
def _copy_ema(ema: nn.Module, net: nn.Module, x_sample: torch.Tensor, dtype: torch.dtype | None) -> None:
    # the averaged weights become the model's; BatchNorm statistics are re-estimated on a sample
    net.load_state_dict(ema.module.state_dict())
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the sample
        net.train()
        device = next(net.parameters()).device
        for i in range(0, len(x_sample), 512):
            with _autocast(device, dtype):
                net(x_sample[i:i + 512])
        for m, mom in zip(norms, momenta, strict=True):  # training goes on with the usual running average
            m.momentum = mom


# ------------------------------------------------------------------------------------------ checkpoints
TRAIN_STATE = "train_state.pt"  # in a run directory while training; removed when the run is complete


def save_train_state(path: str | os.PathLike, state: dict) -> None:
    """Write the state of an unfinished run atomically (tensors and plain values only: loads without pickle)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | os.PathLike | None, config: TrainConfig) -> dict:
    """The state saved by fit(); refused with one line when missing, unreadable or made with another config."""
    p = Path(path) if path is not None else None
    if p is None or not p.is_file():
        raise FmnistError(f"{p.parent if p else 'this run'}: nothing to resume (no {TRAIN_STATE}: the run finished, "
                          "or never completed an epoch)")
    try:
        st = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a damaged file)
        raise FmnistError(f"{p}: not a readable training state ({type(e).__name__})") from None
    mine, theirs = config.to_dict(), st.get("config", {})
    diff = [k for k in mine if k != "device" and mine[k] != theirs.get(k)]
    if diff:
        was = ", ".join(f"{k}={theirs.get(k)!r}" for k in diff)
        raise FmnistError(f"{p}: the run was started with other settings ({was}); resume it with the same options")
    return st


def save_checkpoint(model: nn.Module, path: str | os.PathLike, config: TrainConfig,
                    class_names: tuple[str, ...], extra: dict | None = None) -> Path:
    """Weights as safetensors, with the model name, parameters, config and classes in its metadata."""
    from safetensors.torch import save_model

    meta = {"format": CHECKPOINT_FORMAT, "model": config.model, "model_params": config.model_params,
            "class_names": list(class_names), "normalize": {"mean": MEAN, "std": STD},
            "config": config.to_dict(), **(extra or {})}
    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"fmnist": dumps(meta, indent=None)})
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict]:
    """A model and its metadata from a safetensors checkpoint (no pickle: safe on untrusted files)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model

    from fmnist.models import create_model

    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise FmnistError(f"{p}: no model checkpoint here (a run directory holds model.safetensors)")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("fmnist", "null"))
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as e:
        raise FmnistError(f"{p}: not a readable fmnist checkpoint ({e})") from None
    if not meta or "model" not in meta:
        raise FmnistError(f"{p}: safetensors file without fmnist metadata (not saved by fmnist)")
    params = dict(meta.get("model_params", {}))
    from fmnist.models import model_info

    if model_info(meta["model"]).pretrained:
        params["weights"] = "none"  # the checkpoint holds every weight, the backbone's too
    model = create_model(meta["model"], num_classes=len(meta["class_names"]), **params)
    try:
        load_model(model, str(p), strict=True, device=device)
    except (RuntimeError, SafetensorError) as e:
        lines = str(e).splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0]).strip()
        detail = detail if len(detail) <= 160 else detail[:160] + "..."
        raise FmnistError(f"{p}: weights do not fit model '{meta['model']}' ({detail}); a checkpoint saved "
                          f"by an older fmnist with another layout of this model needs retraining") from None
    model.to(device).eval()
    return model, meta


def numpy_logits(model: nn.Module, images: np.ndarray, tta: bool = False, precision: str = "fp32") -> np.ndarray:
    """Logits (N, C) for uint8 images (N, 28, 28): the inference entry point for arrays."""
    device = next(model.parameters()).device
    return predict_logits(model, to_input(images, device), dtype=autocast_dtype(device, precision),
                          tta=tta).cpu().numpy()
