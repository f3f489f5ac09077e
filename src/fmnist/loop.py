"""The one training loop: `fit`, its History, and the per-epoch TrainState that `--resume` continues from.
Optimizers and the schedule are in fmnist.optim, batch augmentation in fmnist.augment."""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fmnist.augment import augment_batch
from fmnist.config import TrainConfig, augment_ops
from fmnist.data import Split, to_input
from fmnist.errors import FmnistError
from fmnist.files import atomic_path
from fmnist.inference import autocast, autocast_dtype, native_bf16, predict_logits, resolve_device
from fmnist.optim import check_optimizer, lr_at, make_optimizer
from fmnist.rundir import TRAIN_STATE


@dataclass
class History:
    """Per-epoch curves and how the run ended."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time of each epoch (training + validation)
    lr: list[float] = field(default_factory=list)  # learning rate at the end of each epoch
    best_epoch: int = 0  # epoch of lowest validation loss
    restored_best: bool = False  # weights are those of best_epoch (early stopping)
    stopped_early: bool = False
    interrupted: bool = False
    train_seconds: float = 0.0
    images_per_second: float = 0.0  # training throughput

    @property
    def kept_val_accuracy(self) -> float | None:
        """Validation accuracy of the weights the run keeps: the best epoch's when early stopping restored them,
        else the last epoch's; None without validation (RunMetrics.val_accuracy)."""
        if not self.val_accuracy:
            return None
        v = self.val_accuracy[self.best_epoch - 1] if self.restored_best else self.val_accuracy[-1]
        return v if math.isfinite(v) else None

    @property
    def kept_val_loss(self) -> float | None:
        """Validation loss of the weights the run keeps (see kept_val_accuracy)."""
        if not self.val_loss:
            return None
        v = self.val_loss[self.best_epoch - 1] if self.restored_best else self.val_loss[-1]
        return v if math.isfinite(v) else None

    def as_dict(self) -> dict:
        """As a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> History:
        """The curves of a history.csv (how the run ended is in metrics.json)."""
        import pandas as pd

        try:
            df = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise FmnistError(f"{path}: not a readable history ({e})") from None
        df = df.rename(columns={"train_acc": "train_accuracy", "val_acc": "val_accuracy"})  # the previous release's
        cols = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "lr")
        h = cls(**{c: [int(v) for v in df[c]] if c == "epoch" else [float(v) for v in df[c]] for c in cols
                   if c in df})
        if h.val_loss and any(math.isfinite(v) for v in h.val_loss):
            h.best_epoch = h.epoch[min(range(len(h.val_loss)), key=lambda i: (math.isnan(h.val_loss[i]),
                                                                              h.val_loss[i]))]
        return h

    def to_csv(self, path: str | os.PathLike) -> None:
        """history.csv: epoch, train_loss, train_accuracy, val_loss, val_accuracy, seconds, lr (atomically)."""
        cols = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "lr")
        lines = [",".join(cols)]
        for i in range(len(self.epoch)):
            # an empty cell, not "nan", where a run had no validation split
            lines.append(",".join(str(self.epoch[i]) if c == "epoch" else
                                  f"{getattr(self, c)[i]:.6g}" if math.isfinite(getattr(self, c)[i]) else ""
                                  for c in cols))
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- train state
@dataclass
class TrainState:
    """Everything an unfinished run needs to continue exactly: weights, optimizer, EMA, random states, the history
    so far and early stopping's bookkeeping. Written after each epoch; saved as tensors and plain values only, so it
    loads without pickle."""

    config: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    ema: dict[str, Any] | None
    generator: torch.Tensor
    torch_rng: torch.Tensor
    cuda_rng: torch.Tensor | None
    history: dict[str, Any]
    best_loss: float
    best_state: dict[str, Any] | None
    since_best: int
    step: int
    seen: int
    seconds: float

    def save(self, path: str | os.PathLike) -> None:
        """Atomically: a run killed while writing keeps its previous state."""
        with atomic_path(path) as tmp:
            torch.save({f.name: getattr(self, f.name) for f in fields(self)}, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike | None, config: TrainConfig) -> TrainState:
        """The state fit() saved; refused with one line when missing, unreadable, not fmnist's or made with other
        settings."""
        p = Path(path) if path is not None else None
        if p is None or not p.is_file():
            raise FmnistError(f"{p.parent if p else 'this run'}: nothing to resume (no {TRAIN_STATE}: the run "
                              "finished, or never completed an epoch)")
        try:
            st = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (torch raises many kinds for a damaged file)
            raise FmnistError(f"{p}: not a readable training state ({type(e).__name__})") from None
        if not isinstance(st, dict):
            raise FmnistError(f"{p}: not a training state fmnist wrote (a {type(st).__name__}, not a dictionary)")
        expected = {"config": dict, "model": dict, "optimizer": dict, "generator": torch.Tensor,
                    "torch_rng": torch.Tensor, "history": dict, "best_loss": float, "since_best": int, "step": int,
                    "seen": int, "seconds": float}
        wrong = [k for k, kind in expected.items() if not isinstance(st.get(k), kind) or isinstance(st.get(k), bool)]
        if wrong:
            raise FmnistError(f"{p}: not a training state fmnist wrote (field {wrong[0]} is missing or of another "
                              "type)")
        mine, theirs = config.to_dict(), st["config"]
        diff = [k for k in mine if k != "device" and mine[k] != theirs.get(k)]
        if diff:
            was = ", ".join(f"{k}={theirs.get(k)!r}" for k in diff)
            raise FmnistError(f"{p}: the run was started with other settings ({was}); resume it with the same "
                              "options")
        return cls(**{f.name: st.get(f.name) for f in fields(cls)})


# --------------------------------------------------------------------------------------------- the loop
def _l2_weights(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Linear | nn.Conv2d) and m.weight.requires_grad]


def _frozen_features(model: nn.Module, augment: bool) -> bool:
    return bool(getattr(model, "frozen_backbone", False)) and not augment


def trainable_net(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The part of `model` that training updates: the head alone for a frozen backbone whose features are
    computed once (no augmentation), else the whole model."""
    return model.head if _frozen_features(model, bool(augment_ops(config.augment))) else model


@dataclass
class _Progress:
    """fit's running bookkeeping, what a TrainState saves of it."""

    hist: History = field(default_factory=History)
    best_loss: float = math.inf
    best_state: dict | None = None
    since_best: int = 0
    step: int = 0
    seen: int = 0
    before: float = 0.0  # seconds of training before this process (a resumed run)


def fit(model: nn.Module, train: Split, val: Split | None, config: TrainConfig,
        progress: bool | None = None, log: Any = print, on_epoch: Any = None,
        state_path: str | os.PathLike | None = None, resume: bool | TrainState = False) -> History:
    """Train `model` on `train`, validating on `val` after each epoch. Returns the History.

    progress: a bar per epoch (None: only when the output is a terminal or a notebook).

    Ctrl-C stops after the current step and returns what was done (History.interrupted). With patience > 0,
    training stops when validation loss has not improved for that many epochs and the best weights are restored.
    `on_epoch(history)`, if given, is called after each epoch with the History so far (a tracker logs it, a tuner
    prunes from its last validation figure). With `state_path`, the TrainState is written there atomically after
    each epoch; `resume=True` continues from it (or from the TrainState given, already loaded), and on CPU with
    the same config ends with the same weights as a run that was never stopped.
    """
    for what, v, kinds in (("model", model, nn.Module), ("train", train, Split), ("config", config, TrainConfig)):
        if not isinstance(v, kinds):
            raise FmnistError(f"fit: {what} must be a {kinds.__name__}, got {type(v).__name__}")
    if val is not None and not isinstance(val, Split):
        raise FmnistError(f"fit: val must be a Split or None, got {type(val).__name__}")
    device = resolve_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    if config.precision == "bf16" and not native_bf16(device):
        what = "CPU has no native bf16 (AVX-512 BF16 or AMX)" if device.type == "cpu" else "GPU has no native bf16"
        log(f"note: this {what}, so --precision bf16 is emulated and many times slower than fp32; "
            "--precision auto picks fp32 here")
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    state = TrainState.load(state_path, config) if resume is True else resume or None
    net = trainable_net(model, config)
    check_optimizer(net, config)  # before the feature pass: a setting it refuses costs no work
    x_tr = to_input(train.images, device)  # (N, 1, 28, 28) float, normalized
    y_tr = torch.as_tensor(train.labels, device=device)
    x_va = to_input(val.images, device) if val is not None and len(val) else None
    y_va = torch.as_tensor(val.labels, device=device) if x_va is not None else None
    if state is None:  # a layer set from the data (e.g. resnet_fm's whitening stem), once before the first step
        for m in net.modules():
            if hasattr(m, "init_from_data"):
                m.init_from_data(x_tr[:10000])
    opt = make_optimizer(net, config)
    feature_seconds = 0.0  # counted as training time: the feature pass is part of training the head
    if net is not model:  # a frozen backbone is a fixed function: its features once, the head trains on them
        t0 = time.perf_counter()
        x_tr = _features(model, x_tr, dtype)
        x_va = _features(model, x_va, dtype) if x_va is not None else None
        feature_seconds = time.perf_counter() - t0
        log(f"backbone features computed once for {len(x_tr) + (len(x_va) if x_va is not None else 0):,} "
            f"images in {feature_seconds:.1f}s ({x_tr.shape[1]} per image); training the head only")
    ema = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema)) if config.ema else None
    l2 = config.l2 + float(getattr(model, "l2", 0.0))  # the model's Keras-style regularizer too
    g = torch.Generator().manual_seed(config.seed)
    run = _restore(state, state_path, net, opt, ema, g, device, config, log) if state is not None else _Progress()
    t_start = time.perf_counter() - feature_seconds
    hist, n = run.hist, len(y_tr)
    # alternating flips (airbench's derandomized flipping): a fixed random half of the images is mirrored in odd
    # epochs, the other half in even epochs, so every image is seen both ways in any two consecutive epochs.
    # Drawn from the seed alone, so a resumed run mirrors the same images.
    alt = torch.rand(n, generator=torch.Generator().manual_seed(config.seed + 1)) < 0.5 \
        if "altflip" in augment_ops(config.augment) else None
    try:
        for epoch in range(len(hist.epoch) + 1, config.epochs + 1):
            if hist.stopped_early:
                break
            t_ep = time.perf_counter()
            train_loss, train_accuracy, lr = _train_epoch(net, opt, ema, x_tr, y_tr, alt, g, run, epoch, config, l2,
                                                          device, dtype, progress)
            # with EMA the average, kept apart from the training weights, is what each epoch is judged by
            judged = _averaged(ema, x_tr[:4096], dtype) if ema is not None else net
            val_loss, val_accuracy = _validate(judged, x_va, y_va, dtype)
            for k, v in (("epoch", epoch), ("train_loss", train_loss), ("train_accuracy", train_accuracy),
                         ("val_loss", val_loss), ("val_accuracy", val_accuracy),
                         ("seconds", time.perf_counter() - t_ep), ("lr", lr)):
                getattr(hist, k).append(v)
            if val_loss < run.best_loss:
                run.best_loss, run.since_best, hist.best_epoch = val_loss, 0, epoch
                if config.patience:
                    run.best_state = copy.deepcopy(judged.state_dict())
            else:
                run.since_best += 1
            hist.stopped_early = bool(config.patience) and run.since_best >= config.patience
            if state_path is not None:
                hist.train_seconds = run.before + time.perf_counter() - t_start
                _state(run, config, net, opt, ema, g, device).save(state_path)
            # logged once the state is on disk: a run killed after this line resumes after this epoch
            log(f"epoch {epoch:>3}/{config.epochs}  train loss {train_loss:.4f} acc {train_accuracy:.4f}  "
                + (f"val loss {val_loss:.4f} acc {val_accuracy:.4f}" if x_va is not None else "(no validation split)")
                + f"  {hist.seconds[-1]:.1f}s" + ("  (best)" if hist.best_epoch == epoch and x_va is not None else ""))
            if on_epoch is not None:
                on_epoch(hist)
            if hist.stopped_early:
                log(f"early stop: validation loss has not improved for {config.patience} epochs "
                    f"(best at epoch {hist.best_epoch})")
    except KeyboardInterrupt:
        hist.interrupted = True
        log(f"interrupted at epoch {len(hist.epoch) + 1}: keeping the {len(hist.epoch)} finished epoch(s)"
            + (f"; continue it with --resume (state in {state_path})" if state_path is not None else ""))
    hist.train_seconds = run.before + time.perf_counter() - t_start
    hist.images_per_second = run.seen / max(hist.train_seconds, 1e-9)
    _keep(net, ema, run, x_tr, dtype, x_va is not None, log)
    model.eval()
    return hist


def _restore(st: TrainState, state_path: Any, net: nn.Module, opt: Any, ema: nn.Module | None,
             g: torch.Generator, device: torch.device, config: TrainConfig, log: Any) -> _Progress:
    """Load a TrainState into the network, optimizer, EMA and random generators; its bookkeeping."""
    try:  # the file may hold anything: a state of another model fails here, before any step
        net.load_state_dict(st.model)
        opt.load_state_dict(st.optimizer)
        if ema is not None and st.ema is not None:
            ema.load_state_dict(st.ema)
        g.set_state(st.generator)
        torch.set_rng_state(st.torch_rng)
        if device.type == "cuda" and st.cuda_rng is not None:
            torch.cuda.set_rng_state(st.cuda_rng, device)
        hist = History(**st.history)
        if st.best_state:
            copy.deepcopy(net).load_state_dict(st.best_state)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise FmnistError(f"{state_path}: the training state does not fit model '{config.model}' "
                          f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
    log(f"resuming at epoch {len(hist.epoch) + 1}/{config.epochs} (step {st.step:,}) from {state_path}")
    return _Progress(hist, st.best_loss, st.best_state, st.since_best, st.step, st.seen, st.seconds)


def _state(run: _Progress, config: TrainConfig, net: nn.Module, opt: Any, ema: nn.Module | None,
           g: torch.Generator, device: torch.device) -> TrainState:
    return TrainState(config.to_dict(), net.state_dict(), opt.state_dict(),
                      ema.state_dict() if ema is not None else None, g.get_state(), torch.get_rng_state(),
                      torch.cuda.get_rng_state(device) if device.type == "cuda" else None, run.hist.as_dict(),
                      run.best_loss, run.best_state, run.since_best, run.step, run.seen, run.hist.train_seconds)


def _train_epoch(net: nn.Module, opt: Any, ema: nn.Module | None, x_tr: torch.Tensor, y_tr: torch.Tensor,
                 alt: torch.Tensor | None, g: torch.Generator, run: _Progress, epoch: int, config: TrainConfig,
                 l2: float, device: torch.device, dtype: torch.dtype | None,
                 progress: bool | None) -> tuple[float, float, float]:
    """One pass over the training data: (mean loss, accuracy, the last learning rate)."""
    from tqdm.auto import tqdm

    ops = augment_ops(config.augment)
    n = len(y_tr)
    bs = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * config.epochs
    l2_params = _l2_weights(net) if l2 else []
    net.train()
    perm = torch.randperm(n, generator=g)
    flips = alt[perm] ^ bool(epoch % 2) if alt is not None else None
    perm = perm.to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    lr = config.lr
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", leave=False,
               disable=None if progress is None else not progress, unit="batch", dynamic_ncols=True)
    for i in bar:
        idx = perm[i * bs:(i + 1) * bs]
        xb, yb = x_tr[idx], y_tr[idx]
        if ops:
            xb = augment_batch(xb, ops, g, None if flips is None else flips[i * bs:(i + 1) * bs], config.erase_area)
        if config.channels_last and xb.ndim == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        lr = lr_at(run.step, total, config, steps_per_epoch)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with autocast(device, dtype):
            out = net(xb)
            loss = F.cross_entropy(out.float(), yb, label_smoothing=config.label_smoothing)
        if l2_params:
            loss = loss + l2 * sum(w.pow(2).sum() for w in l2_params)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(net)
        run.step += 1
        run.seen += len(yb)
        loss_sum += loss.detach() * len(yb)  # no .item(): no host sync per step
        correct += (out.detach().argmax(1) == yb).sum()
        if not bar.disable and i % 25 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / min(n, (i + 1) * bs):.4f}",
                            acc=f"{correct.item() / min(n, (i + 1) * bs):.4f}")
    bar.close()
    return loss_sum.item() / n, correct.item() / n, lr


def _validate(net: nn.Module, x_va: torch.Tensor | None, y_va: torch.Tensor | None,
              dtype: torch.dtype | None) -> tuple[float, float]:
    """Validation loss and accuracy (NaN for both without a validation split)."""
    if x_va is None:
        return float("nan"), float("nan")
    logits = predict_logits(net, x_va, dtype=dtype)
    return F.cross_entropy(logits, y_va).item(), (logits.argmax(1) == y_va).float().mean().item()


def _keep(net: nn.Module, ema: nn.Module | None, run: _Progress, x_tr: torch.Tensor, dtype: torch.dtype | None,
          validated: bool, log: Any) -> None:
    """Put the weights the run keeps into `net`: the average with EMA, the best epoch's after early stopping."""
    hist = run.hist
    if ema is not None and run.step:  # the model keeps the average (the updates of an interrupted epoch included)
        net.load_state_dict(_averaged(ema, x_tr[:4096], dtype).state_dict())
    if run.best_state is not None and hist.best_epoch != (hist.epoch[-1] if hist.epoch else 0):
        net.load_state_dict(run.best_state)
        hist.restored_best = True
        log(f"restored the weights of epoch {hist.best_epoch} (lowest validation loss {run.best_loss:.4f})")
    elif validated and hist.epoch and hist.best_epoch < hist.epoch[-1] - 2:
        log(f"note: validation loss was lowest at epoch {hist.best_epoch} and rose after it (overfitting); "
            f"--patience N stops early and keeps the best weights")


def _features(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), 512):
            with autocast(device, dtype):
                out.append(model.features(x[i:i + 512]).float())
    return torch.cat(out).clone()  # clone: a normal tensor, usable in autograd


@torch.no_grad()
def _averaged(ema: nn.Module, x_sample: torch.Tensor, dtype: torch.dtype | None) -> nn.Module:
    """The averaged network of an EMA (torch.optim.swa_utils.AveragedModel), its BatchNorm statistics estimated
    anew on a sample of training images: the average's weights never saw the running statistics the training
    weights gathered. The training weights are left as they are (the average is kept apart, as timm and
    swa_utils do)."""
    net = ema.module
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the sample
        net.train()
        device = next(net.parameters()).device
        for i in range(0, len(x_sample), 512):
            with autocast(device, dtype):
                net(x_sample[i:i + 512])
        for m, mom in zip(norms, momenta, strict=True):
            m.momentum = mom
    return net.eval()
