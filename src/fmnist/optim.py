"""Optimizers and the learning-rate schedule of the training loop: PyTorch's, by the config's name, and `muon`
(torch.optim.Muon for the hidden weight matrices, SGD for the rest)."""

from __future__ import annotations

import math

import torch
from torch import nn

from fmnist.config import TrainConfig
from fmnist.errors import FmnistError


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
        mats, rest = self.split(net, config)
        params = mats + rest
        self._pairs = [(p, nn.Parameter(_matrix(p.detach(), _nhwc(p))), _nhwc(p)) for p in mats]
        self.muon = torch.optim.Muon([v for _, v, _ in self._pairs], lr=config.muon_lr, momentum=0.95,
                                     nesterov=True)
        self.sgd = torch.optim.SGD(rest, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                   weight_decay=config.weight_decay) if rest else None
        for g in self.muon.param_groups:
            g["lr_scale"] = config.muon_lr / config.lr
        self.param_groups = (self.sgd.param_groups if self.sgd else []) + self.muon.param_groups
        self._params = params

    @staticmethod
    def split(net: nn.Module, config: TrainConfig) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The trainable parameters Muon takes (hidden weights) and those SGD takes; refused in one line when
        there are no hidden weights or one cannot be viewed as a matrix without a copy (it would never be
        updated). Allocates nothing: `train_run` calls it to check a config before any work."""
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        out_layer = {id(p) for p in linears[-1].parameters()} if linears else set()
        params = [p for p in net.parameters() if p.requires_grad]
        mats = [p for p in params if p.ndim >= 2 and id(p) not in out_layer]
        rest = [p for p in params if p.ndim < 2 or id(p) in out_layer]
        if not mats:
            raise FmnistError(f"optimizer muon: model '{config.model}' has no hidden weight matrices; use sgd")
        if any(_matrix(p.detach(), _nhwc(p)).data_ptr() != p.data_ptr() for p in mats):
            raise FmnistError(f"optimizer muon: a weight of model '{config.model}' has a memory layout it cannot "
                              "view as a matrix; use sgd")
        return mats, rest

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


def check_optimizer(net: nn.Module, config: TrainConfig) -> None:
    """Refuse, before any work, an optimizer the model cannot be trained with (one line)."""
    if not any(p.requires_grad for p in net.parameters()):
        raise FmnistError(f"model '{config.model}' has no trainable parameters")
    if config.optimizer == "muon":
        MuonSGD.split(net, config)


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
