"""The one training loop: `fit`, its History, learning-rate schedules, optimizers, batch augmentation and the
per-epoch train state that `--resume` continues from."""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fmnist.config import ERASE_AREA, TrainConfig, augment_ops
from fmnist.data import BLACK, Split, to_input
from fmnist.errors import FmnistError
from fmnist.files import atomic_path
from fmnist.inference import autocast, autocast_dtype, native_bf16, predict_logits, resolve_device
from fmnist.rundir import TRAIN_STATE


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

    @property
    def kept_val_accuracy(self) -> float | None:
        """Validation accuracy of the weights the run keeps: the best epoch's when early stopping restored them,
        else the last epoch's; None without validation (RunMetrics.val_accuracy)."""
        if not self.val_acc:
            return None
        v = self.val_acc[self.best_epoch - 1] if self.restored_best else self.val_acc[-1]
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
        cols = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr")
        h = cls(**{c: [int(v) for v in df[c]] if c == "epoch" else [float(v) for v in df[c]] for c in cols
                   if c in df})
        if h.val_loss and any(math.isfinite(v) for v in h.val_loss):
            h.best_epoch = h.epoch[min(range(len(h.val_loss)), key=lambda i: (math.isnan(h.val_loss[i]),
                                                                              h.val_loss[i]))]
        return h

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


def _nhwc(t: torch.Tensor) -> bool:
    return t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _matrix(t: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """A weight (or its gradient) as a 2-D (out, rest) matrix. A channels_last convolution weight is stored as
    (out, kh, kw, in), so its view takes the columns in that order, which changes nothing for Muon (the
    orthogonalized update of a matrix with permuted columns is the permuted update)."""
    if nhwc:
        t = t.permute(0, 2, 3, 1)
    return t.reshape(t.shape[0], -1)


class MuonSGD:
    """Muon for the hidden layers' weights, SGD with Nesterov momentum for the rest (the `muon` optimizer).

    torch.optim.Muon (Jordan et al. 2024) orthogonalizes each update with a Newton-Schulz iteration; it accepts
    only 2-D parameters, so a convolution's (out, in, kh, kw) weight is handed to it as a (out, in*kh*kw) view of
    the same storage, whose gradient is pointed at before each step. The output layer, biases and BatchNorm stay
    with SGD, as Muon's authors advise. The loop's schedule sets each group's lr times its "lr_scale": Muon's
    groups run at `muon_lr` when SGD's run at `lr`.
    """

    def __init__(self, net: nn.Module, config: TrainConfig) -> None:
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        out_layer = {id(p) for p in linears[-1].parameters()} if linears else set()
        params = [p for p in net.parameters() if p.requires_grad]
        mats = [p for p in params if p.ndim >= 2 and id(p) not in out_layer]
        rest = [p for p in params if p.ndim < 2 or id(p) in out_layer]
        if not mats:
            raise FmnistError(f"optimizer muon: model '{config.model}' has no hidden weight matrices; use sgd")
        self._pairs = [(p, nn.Parameter(_matrix(p.detach(), _nhwc(p))), _nhwc(p)) for p in mats]
        if any(v.data_ptr() != p.data_ptr() for p, v, _ in self._pairs):  # a copy would never be updated
            raise FmnistError(f"optimizer muon: a weight of model '{config.model}' has a memory layout it cannot "
                              "view as a matrix; use sgd")
        self.muon = torch.optim.Muon([v for _, v, _ in self._pairs], lr=config.muon_lr, momentum=0.95,
                                     nesterov=True)
        self.sgd = torch.optim.SGD(rest, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                   weight_decay=config.weight_decay) if rest else None
        for g in self.muon.param_groups:
            g["lr_scale"] = config.muon_lr / config.lr
        self.param_groups = (self.sgd.param_groups if self.sgd else []) + self.muon.param_groups
        self._params = params

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:
            p.grad = None
        for _, v, _ in self._pairs:
            v.grad = None

    def step(self) -> None:
        for p, v, nhwc in self._pairs:
            v.grad = None if p.grad is None else _matrix(p.grad, nhwc)
        self.muon.step()
        if self.sgd:
            self.sgd.step()

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "sgd": self.sgd.state_dict() if self.sgd else None}

    def load_state_dict(self, state: dict) -> None:
        self.muon.load_state_dict(state["muon"])
        if self.sgd:
            self.sgd.load_state_dict(state["sgd"])


def make_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer | MuonSGD:
    """The optimizer named in the config, for `net`'s trainable parameters; Adam, AdamW and SGD use PyTorch's
    fused (one kernel) update."""
    if config.optimizer == "muon":
        return MuonSGD(net, config)
    params = [p for p in net.parameters() if p.requires_grad]
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


def augment_batch(x: torch.Tensor, ops: list[str], g: torch.Generator,
                  flip: torch.Tensor | None = None, erase_area: float = ERASE_AREA) -> torch.Tensor:
    """Augment a whole normalized batch (B, 1, 28, 28) with tensor ops; one random draw per image.

    flip: which images to mirror (bool, (B,)), as fit passes for "altflip"; without it they are drawn at random.
    erase_area: the largest fraction of the image an "erase" rectangle covers (the smallest is 0.02)."""
    b = x.shape[0]
    dev = x.device
    if "flip" in ops or "altflip" in ops:
        if flip is None:
            flip = torch.rand(b, generator=g, device="cpu") < 0.5
        x = torch.where(flip.to(dev).view(b, 1, 1, 1), x.flip(3), x)
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
        x = F.grid_sample(x - BLACK, grid, mode=mode, padding_mode="zeros", align_corners=False) + BLACK
    if "erase" in ops:  # random erasing (p=0.5) of a rectangle of 2%-erase_area of the image, filled with black
        hw = 28
        area = (torch.rand(b, generator=g) * (erase_area - 0.02) + 0.02) * hw * hw
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
        x = torch.where(mask.unsqueeze(1), torch.full_like(x, BLACK), x)
    return x


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


def fit(model: nn.Module, train: Split, val: Split | None, config: TrainConfig,
        progress: bool | None = None, log: Any = print, on_epoch: Any = None,
        state_path: str | os.PathLike | None = None, resume: bool = False, on_history: Any = None) -> History:
    """Train `model` on `train`, validating on `val` after each epoch. Returns the History.

    progress: a bar per epoch (None: only when the output is a terminal or a notebook).

    Ctrl-C stops after the current step and returns what was done (History.interrupted). With patience > 0,
    training stops when validation loss has not improved for that many epochs and the best weights are restored.
    `on_epoch(epoch, val_loss, val_acc)`, if given, is called after each epoch (a tuner prunes from it), and
    `on_history(history)` with the History so far.
    With `state_path`, everything needed to continue (weights, optimizer, step, EMA, random states, history) is
    written there atomically after each epoch; `resume=True` continues from it, and on CPU with the same config
    ends with the same weights as a run that was never stopped.
    """
    from tqdm.auto import tqdm

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
    g = torch.Generator().manual_seed(config.seed)
    ops = augment_ops(config.augment)

    x_tr = to_input(train.images, device)  # (N, 1, 28, 28) float, normalized
    y_tr = torch.as_tensor(train.labels, device=device)
    x_va = to_input(val.images, device) if val is not None and len(val) else None
    y_va = torch.as_tensor(val.labels, device=device) if x_va is not None else None

    net = trainable_net(model, config)
    frozen = net is not model  # a frozen backbone: its features are computed once, the head trains on them
    if not resume:  # a layer set from the data (e.g. resnet_fm's whitening stem), once before the first step
        for m in net.modules():
            if hasattr(m, "init_from_data"):
                m.init_from_data(x_tr[:10000])
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise FmnistError(f"model '{config.model}' has no trainable parameters")
    opt = make_optimizer(net, config)  # before the feature pass: a setting it refuses costs no work
    feature_seconds = 0.0  # counted as training time: the feature pass is part of training the head
    if frozen:
        # a frozen backbone is a fixed function: compute its features once, train the head on them
        t0 = time.perf_counter()
        x_tr = _features(model, x_tr, dtype)
        x_va = _features(model, x_va, dtype) if x_va is not None else None
        feature_seconds = time.perf_counter() - t0
        log(f"backbone features computed once for {len(x_tr) + (len(x_va) if x_va is not None else 0):,} "
            f"images in {feature_seconds:.1f}s ({x_tr.shape[1]} per image); training the head only")
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
        try:  # the file may hold anything: a state of another model fails here, before any step
            net.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            if ema is not None and st["ema"] is not None:
                ema.load_state_dict(st["ema"])
            g.set_state(st["generator"])
            torch.set_rng_state(st["torch_rng"])
            if device.type == "cuda" and st.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(st["cuda_rng"], device)
            hist = History(**st["history"])
            if best_state := st["best_state"]:
                copy.deepcopy(net).load_state_dict(best_state)
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise FmnistError(f"{state_path}: the training state does not fit model '{config.model}' "
                              f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
        best_loss, since_best = st["best_loss"], st["since_best"]
        step, seen, before = st["step"], st["seen"], st["seconds"]
        first = len(hist.epoch) + 1
        log(f"resuming at epoch {first}/{config.epochs} (step {step:,}) from {state_path}")
    t_start = time.perf_counter() - feature_seconds
    stop = hist.stopped_early
    # alternating flips (airbench's derandomized flipping): a fixed random half of the images is mirrored in odd
    # epochs, the other half in even epochs, so every image is seen both ways in any two consecutive epochs.
    # Drawn from the seed alone, so a resumed run mirrors the same images.
    alt = torch.rand(n, generator=torch.Generator().manual_seed(config.seed + 1)) < 0.5 if "altflip" in ops else None
    try:
        for epoch in range(first, config.epochs + 1):
            if stop:
                break
            t_ep = time.perf_counter()
            net.train()
            perm = torch.randperm(n, generator=g)
            flips = alt[perm] ^ bool(epoch % 2) if alt is not None else None
            perm = perm.to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", leave=False,
                       disable=None if progress is None else not progress, unit="batch", dynamic_ncols=True)
            for i in bar:
                idx = perm[i * bs:(i + 1) * bs]
                xb, yb = x_tr[idx], y_tr[idx]
                if ops:
                    xb = augment_batch(xb, ops, g, None if flips is None else flips[i * bs:(i + 1) * bs],
                                       config.erase_area)
                if config.channels_last and xb.ndim == 4:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                lr = lr_at(step, total, config, steps_per_epoch)
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
                step += 1
                seen += len(yb)
                loss_sum += loss.detach() * len(yb)  # no .item(): no host sync per step
                correct += (out.detach().argmax(1) == yb).sum()
                if not bar.disable and i % 25 == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() / min(n, (i + 1) * bs):.4f}",
                                    acc=f"{correct.item() / min(n, (i + 1) * bs):.4f}")
            bar.close()
            # with EMA the average, kept apart from the training weights, is what each epoch is judged by
            judged = _averaged(ema, x_tr[:4096], dtype) if ema is not None else net
            train_loss, train_acc = loss_sum.item() / n, correct.item() / n
            if x_va is not None:
                logits = predict_logits(judged, x_va, dtype=dtype)
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
                    best_state = copy.deepcopy(judged.state_dict())
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
            if on_history is not None:  # e.g. an MLflow tracker logging the epoch
                on_history(hist)
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
    if ema is not None and step:  # the model keeps the average (the updates of an interrupted epoch included)
        net.load_state_dict(_averaged(ema, x_tr[:4096], dtype).state_dict())
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


# ------------------------------------------------------------------------------------------ checkpoints


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
    expected = {"config": dict, "model": dict, "optimizer": dict, "generator": torch.Tensor, "torch_rng": torch.Tensor,
                "history": dict, "best_loss": float, "since_best": int, "step": int, "seen": int, "seconds": float}
    if not isinstance(st, dict):
        raise FmnistError(f"{p}: not a training state fmnist wrote (a {type(st).__name__}, not a dictionary)")
    wrong = [k for k, kind in expected.items() if not isinstance(st.get(k), kind) or isinstance(st.get(k), bool)]
    if wrong:
        raise FmnistError(f"{p}: not a training state fmnist wrote (field {wrong[0]} is missing or of another type)")
    mine, theirs = config.to_dict(), st["config"]
    diff = [k for k in mine if k != "device" and mine[k] != theirs.get(k)]
    if diff:
        was = ", ".join(f"{k}={theirs.get(k)!r}" for k in diff)
        raise FmnistError(f"{p}: the run was started with other settings ({was}); resume it with the same options")
    return st


