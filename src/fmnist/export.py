"""Export a saved run to ONNX (dynamic batch axis) or TorchScript, and check it against PyTorch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from fmnist.data import MEAN, STD
from fmnist.errors import FmnistError, require_extra
from fmnist.files import atomic_path, prepare_out_dir


def export(run_dir: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None) -> Path:
    """Write RUN_DIR/model.onnx (or model.pt for TorchScript); returns its path."""
    from fmnist.inference import load_checkpoint

    if fmt not in ("onnx", "torchscript"):
        raise FmnistError(f"format '{fmt}' unknown; choose onnx or torchscript")
    name = "model.onnx" if fmt == "onnx" else "model.pt"
    path = Path(out) if out else Path(run_dir) / name
    if path.is_dir():  # --out DIR: the file goes inside it
        path = path / name
    prepare_out_dir(path.parent, existing="keep")
    model, meta = load_checkpoint(run_dir)
    model.eval()
    example = torch.zeros(2, 1, 28, 28)
    if fmt == "onnx":
        require_extra("export", "onnx")
        with atomic_path(path) as tmp:
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
            import onnx

            m = onnx.load(str(tmp))
            onnx.checker.check_model(m)
            m.metadata_props.add(key="fmnist", value=json.dumps({k: meta[k] for k in ("model", "class_names",
                                                                                     "normalize")}))
            onnx.save(m, str(tmp))
        return path
    with atomic_path(path) as tmp:
        torch.jit.trace(model, example).save(str(tmp))
    return path


class OnnxModel:
    """An exported model run by onnxruntime: logits for uint8 images, no PyTorch needed at inference."""

    def __init__(self, path: str | os.PathLike) -> None:
        require_extra("export", "onnxruntime")
        import onnxruntime as ort

        p = Path(path)
        if p.is_dir():
            p = p / "model.onnx"
        if not p.is_file():
            raise FmnistError(f"{p}: no ONNX model (run `fmnist export RUN_DIR` first)")
        self.session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map.get("fmnist")
        info = json.loads(meta) if meta else {}
        self.class_names = info.get("class_names")
        norm = info.get("normalize", {"mean": MEAN, "std": STD})
        self.mean, self.std = norm["mean"], norm["std"]

    def logits(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(N, C) logits for uint8 images (N, 28, 28)."""
        x = (images.astype(np.float32)[:, None] / 255.0 - self.mean) / self.std
        out = [self.session.run(None, {"input": x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(out)


def agreement(run_dir: str | os.PathLike, images: np.ndarray) -> dict:
    """How often the ONNX model's predictions equal PyTorch's, and the largest logit difference."""
    from fmnist.inference import load_checkpoint, numpy_logits

    model, _ = load_checkpoint(run_dir)
    a = numpy_logits(model, images)
    b = OnnxModel(run_dir).logits(images)
    return {"n": len(images), "same_prediction": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(a - b).max())}
