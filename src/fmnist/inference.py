"""Inference apart from training: device and precision choice, logits for arrays, and the checkpoint format.

`predict`, `export` and the service import this module, never the training loop.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmnist.config import TrainConfig, check_device
from fmnist.data import BLACK, MEAN, STD, to_input
from fmnist.errors import FmnistError
from fmnist.files import atomic_path, dumps
from fmnist.rundir import RunDir

CHECKPOINT_FORMAT = 1


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FmnistError("--device cuda asked for, but PyTorch sees no CUDA GPU (use --device auto or cpu)")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether the device runs bf16 natively (a CUDA GPU that supports it; a CPU with AVX-512 BF16 or AMX). Elsewhere
    bf16 is emulated, many times slower than fp32 (the documentation's speed page has the measured figures)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 for autocast when asked for or (auto) when the hardware runs it natively; None for fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16" or native_bf16(device):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """torch.autocast to `dtype` on `device`, or a no-op for fp32 (dtype None)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


TTA_VIEWS = ("", "flip", "flip+shifts")


def tta_views(x: torch.Tensor, tta: bool | str, black: float = BLACK) -> list[torch.Tensor]:
    """The views of a batch (B, 1, H, W) that test-time augmentation averages: the batch itself; with "flip" (or
    True) its mirror; with "flip+shifts" also both shifted one pixel up, down, left and right, `black` (the
    normalized value of a black pixel) shifted in."""
    mode = "flip" if tta is True else tta or ""
    if mode not in TTA_VIEWS:
        raise FmnistError(f"tta '{tta}' unknown; choose from flip, flip+shifts")
    views = [x] if not mode else [x, x.flip(3)]
    if mode == "flip+shifts":
        pad = torch.nn.functional.pad(x, (1, 1, 1, 1), value=black)
        h, w = x.shape[2], x.shape[3]
        shifted = [pad[:, :, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        views += shifted + [v.flip(3) for v in shifted]
    return views


def tta_arrays(images: np.ndarray, tta: bool | str) -> list[np.ndarray]:
    """tta_views of uint8 images (N, H, W), for the ONNX path."""
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    return [np.ascontiguousarray(v[:, 0].numpy()) for v in tta_views(x, tta, black=0)]


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048,
                   dtype: torch.dtype | None = None, tta: bool | str = False) -> torch.Tensor:
    """Logits (N, C) in fp32 for normalized inputs x (N, 1, 28, 28), in large batches, eval mode; with `tta`
    ("flip" or True, "flip+shifts") the mean logits of the views of `tta_views`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        views = tta_views(xb, tta)
        with autocast(device, dtype):
            out = sum(model(v).float() for v in views) / len(views)
        outs.append(out)
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 0)



def save_checkpoint(model: nn.Module, path: str | os.PathLike, config: TrainConfig,
                    class_names: tuple[str, ...], extra: dict | None = None) -> Path:
    """Weights as safetensors, with the model name, parameters, config and classes in its metadata."""
    from safetensors.torch import save_model

    meta = {"format": CHECKPOINT_FORMAT, "model": config.model, "model_params": config.model_params,
            "class_names": list(class_names), "normalize": {"mean": MEAN, "std": STD},
            "config": config.to_dict(), **(extra or {})}
    # the caller's model stays on its device and in its layout (training evaluates it next, there): safetensors
    # writes a contiguous CPU copy of each tensor
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"fmnist": dumps(meta, indent=None)}, force_contiguous=True)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict]:
    """A model and its metadata from a safetensors checkpoint (no pickle: safe on untrusted files).

    What the file says is checked before it is acted on: the metadata's fields and types (one line naming the
    field), and the model it describes is first built without memory (PyTorch's meta device) and its tensor shapes
    compared with the file's, so a crafted file cannot make fmnist allocate more than the file's own tensors.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model

    from fmnist.models import create_model, model_info

    p = Path(path)
    if p.is_dir():
        p = RunDir(p).model
    if not p.is_file():
        raise FmnistError(f"{p}: no model checkpoint here (a run directory holds model.safetensors)")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("fmnist", "null"))
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118  (not a dict)
    except RecursionError:
        raise FmnistError(f"{p}: checkpoint metadata nested too deeply (not saved by fmnist)") from None
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as e:
        raise FmnistError(f"{p}: not a readable fmnist checkpoint ({e})") from None
    if not isinstance(meta, dict) or "model" not in meta:
        raise FmnistError(f"{p}: safetensors file without fmnist metadata (not saved by fmnist)")
    check_metadata(meta, str(p))
    params = dict(meta.get("model_params") or {})
    try:
        if model_info(meta["model"]).pretrained:
            params["weights"] = "none"  # the checkpoint holds every weight, the backbone's too
        with torch.device("meta"):  # the architecture the metadata describes, without allocating it
            skeleton = create_model(meta["model"], num_classes=len(meta["class_names"]), **params)
    except FmnistError as e:
        raise FmnistError(f"{p}: {e}") from None
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if want != shapes:
        missing = sorted(set(want) - set(shapes))
        other = sorted(k for k in set(want) & set(shapes) if want[k] != shapes[k])
        extra = sorted(set(shapes) - set(want))
        detail = (f"missing {missing[0]}" if missing else
                  f"{other[0]} is {'x'.join(map(str, shapes[other[0]]))}, the model's "
                  f"{'x'.join(map(str, want[other[0]]))}" if other else f"unexpected {extra[0]}")
        raise FmnistError(f"{p}: weights do not fit model '{meta['model']}' ({detail}); a checkpoint saved "
                          f"by an older fmnist with another layout of this model needs retraining")
    model = create_model(meta["model"], num_classes=len(meta["class_names"]), **params)
    try:
        load_model(model, str(p), strict=True, device=device)
    except (RuntimeError, SafetensorError) as e:
        raise FmnistError(f"{p}: weights do not load into model '{meta['model']}' ({str(e).splitlines()[0][:160]})"
                          ) from None
    # channels_last (NHWC), as training uses: faster batched inference of the convolutional nets on CPU (oneDNN)
    model.to(device, memory_format=torch.channels_last).eval()
    return model, meta


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_metadata(meta: dict, where: str) -> None:
    """One clear line when a checkpoint's metadata is not what fmnist writes: a newer or unknown format, or a field
    of the wrong type or value (the file may come from anyone)."""
    from fmnist.data import check_class_names

    def bad(field: str, what: str) -> FmnistError:
        return FmnistError(f"{where}: metadata field '{field}' {what} (not a checkpoint fmnist wrote)")

    fmt = meta.get("format", CHECKPOINT_FORMAT)
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise bad("format", f"must be a whole number, got {fmt!r:.40}")
    if fmt != CHECKPOINT_FORMAT:
        raise FmnistError(f"{where}: checkpoint format {fmt}, this fmnist reads format {CHECKPOINT_FORMAT}"
                          + (" (saved by a newer fmnist: upgrade it)" if fmt > CHECKPOINT_FORMAT else ""))
    if not isinstance(meta["model"], str):
        raise bad("model", f"must be a model name, got {meta['model']!r:.40}")
    for name in ("model_params", "config"):
        if not isinstance(meta.get(name, {}), dict):
            raise bad(name, "must be an object")
    names = meta.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad("class_names", "must be a list of names")
    check_class_names(names, f"{where}: class_names")
    for name in ("calibration", "ood"):
        if meta.get(name) is not None and not isinstance(meta[name], dict):
            raise bad(name, "must be an object or null")
    cal = meta.get("calibration")
    if cal:
        if set(cal) != {"temperature", "level", "threshold", "fitted_on", "n"} or not all(
                _number(cal[k]) for k in ("temperature", "level", "threshold", "n")):
            raise bad("calibration", "must hold numbers temperature, level, threshold, n and text fitted_on")
        if not (cal["temperature"] > 0 and 0 < cal["level"] < 1 and math.isfinite(cal["threshold"])):
            raise bad("calibration", "holds a temperature <= 0 or a level outside (0, 1)")
    ood = meta.get("ood")
    if ood and not (_number(ood.get("energy_threshold")) and math.isfinite(ood["energy_threshold"])):
        raise bad("ood", "must hold a finite energy_threshold")
    try:
        TrainConfig.from_dict(meta.get("config") or {"model": meta["model"]})
    except FmnistError as e:
        raise bad("config", f"is invalid: {e}") from None
    except TypeError:
        raise bad("config", "is invalid") from None


def numpy_logits(model: nn.Module, images: np.ndarray, tta: bool | str = False,
                 precision: str = "fp32") -> np.ndarray:
    """Logits (N, C) for uint8 images (N, 28, 28): the inference entry point for arrays."""
    device = next(model.parameters()).device
    return predict_logits(model, to_input(images, device), dtype=autocast_dtype(device, precision),
                          tta=tta).cpu().numpy()


# ------------------------------------------------------------------------------------- out of distribution
OOD_QUANTILE = 0.99  # the share of in-distribution images the threshold lets through (1% false alarms by design)


def energy(logits: np.ndarray) -> np.ndarray:
    """Energy score -logsumexp(logits) per row (Liu et al., 2020): higher = less like the training data."""
    from scipy.special import logsumexp

    return -logsumexp(np.asarray(logits, dtype=np.float64), axis=1)


def calibrate_ood(logits: np.ndarray, source: str) -> dict[str, Any]:
    """The energy threshold above which a picture is called unlike the training data: the OOD_QUANTILE of the
    energies of held-out in-distribution images' logits (stored in the checkpoint)."""
    e = energy(logits)
    return {"energy_threshold": float(np.quantile(e, OOD_QUANTILE)), "quantile": OOD_QUANTILE,
            "calibrated_on": source, "n": int(len(logits))}
