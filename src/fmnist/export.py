"""Export a saved run to ONNX (dynamic batch axis; outputs "logits" and calibrated "probabilities") or TorchScript,
and check it against PyTorch."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist.data import MEAN, STD
from fmnist.errors import FmnistError, require_extra
from fmnist.files import atomic_path, prepare_out_dir
from fmnist.inference import tta_arrays
from fmnist.rundir import INT8_ONNX, INT8_REPORT, ONNX, TORCHSCRIPT


def export(run_dir: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None) -> Path:
    """Write RUN_DIR/model.onnx (or model.pt for TorchScript); returns its path."""
    from fmnist.inference import load_checkpoint

    if fmt not in ("onnx", "torchscript"):
        raise FmnistError(f"format '{fmt}' unknown; choose onnx or torchscript")
    name = ONNX if fmt == "onnx" else TORCHSCRIPT
    path = Path(out) if out else Path(run_dir) / name
    if path.is_dir():  # --out DIR: the file goes inside it
        path = path / name
    prepare_out_dir(path.parent, existing="keep")
    model, meta = load_checkpoint(run_dir)
    model.eval()
    example = torch.zeros(2, 1, 28, 28)
    if fmt == "onnx":
        require_extra("export", "onnx")
        calibration = meta.get("calibration") or {}
        with atomic_path(path) as tmp:
            torch.onnx.export(_WithProbabilities(model, calibration.get("temperature", 1.0)), (example,), str(tmp),
                              input_names=["input"], output_names=["logits", "probabilities"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"},
                                            "probabilities": {0: "batch"}}, opset_version=17, dynamo=False)
            import onnx

            m = onnx.load(str(tmp))
            onnx.checker.check_model(m)
            # the calibration goes along: "probabilities" are already calibrated; the threshold gives the sets
            m.metadata_props.add(key="fmnist", value=json.dumps({
                **{k: meta[k] for k in ("model", "class_names", "normalize")}, "calibration": calibration or None}))
            onnx.save(m, str(tmp))
        return path
    with atomic_path(path) as tmp:
        torch.jit.trace(model, example).save(str(tmp))
    return path


def int8_saturates() -> bool:
    """Whether this CPU runs onnxruntime's uint8 x int8 products with VPMADDUBSW, whose 16-bit sums saturate (x86
    without VNNI: AVX2-only and older): there full 8-bit weights lose accuracy (2.3 points for the `fast` model on an
    AVX2 AMD EPYC), 7-bit weights do not. An x86 CPU whose flags cannot be read counts as one that saturates.
    Read from /proc/cpuinfo by hand: torch's probe (`torch.cpu._is_vnni_supported`) knows AVX-512 VNNI only, not
    the AVX-VNNI of recent desktop CPUs, which onnxruntime uses too."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # Arm's int8 dot products accumulate in 32 bits
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


class _DropRecordsOf:
    """A logging filter that drops the records logged from one package's files, and lets every other through."""

    def __init__(self, package: str) -> None:
        self.part = f"{os.sep}{package}{os.sep}"

    def filter(self, record: Any) -> bool:
        return self.part not in record.pathname


def int8_weight_bits(choice: int | None = None) -> int:
    """The int8 weight bits to quantize with: `choice` (7 or 8), or for None this CPU's (7 where `int8_saturates`)."""
    if choice not in (None, 7, 8):
        raise FmnistError(f"weight bits must be 7 or 8, got {choice}")
    return choice or (7 if int8_saturates() else 8)


def quantize_int8(run_dir: str | os.PathLike, calibration_images: np.ndarray,
                  fp32_path: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                  weight_bits: int | None = None) -> Path:
    """Write RUN_DIR/model.int8.onnx: onnxruntime's static quantization of the exported fp32 model (QDQ format,
    per-channel int8 weights, uint8 activations whose ranges come from `calibration_images`, training images).
    `weight_bits` 8 uses the full int8 range (for CPUs with VNNI), 7 leaves one bit of headroom so that the
    products cannot saturate on x86 CPUs without VNNI (onnxruntime's reduce_range); None picks by this CPU
    (`int8_saturates`). The file runs anywhere; an 8-bit file loses accuracy on a CPU without VNNI. Returns its path."""
    reduce_range = int8_weight_bits(weight_bits) == 7
    require_extra("export", "onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    src = Path(fp32_path) if fp32_path else Path(run_dir) / ONNX
    if not src.is_file():
        raise FmnistError(f"{src}: no fp32 ONNX model to quantize (export it first)")
    path = Path(out) if out else src.parent / INT8_ONNX
    x = _normalize(calibration_images, MEAN, STD)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": x[i:i + 128]} for i in range(0, len(x), 128)])

        def get_next(self) -> dict | None:
            return next(self.it, None)

    import logging
    import warnings

    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime's notes on BatchNorm weights it leaves per-tensor
        prepared = tmp.with_name(tmp.name + ".prep.onnx")
        quiet = _DropRecordsOf("onnxruntime")  # its quantizer logs each step through the root logger
        logging.getLogger().addFilter(quiet)
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            reduce_range=reduce_range, nodes_to_exclude=_softmax_nodes(prepared))
        finally:
            logging.getLogger().removeFilter(quiet)
            prepared.unlink(missing_ok=True)
        import onnx

        m, meta = onnx.load(str(tmp)), onnx.load(str(src)).metadata_props
        for p in meta:  # the class names, normalization and calibration travel with the int8 model too
            m.metadata_props.add(key=p.key, value=p.value)
        m.metadata_props.add(key="weight_bits", value="7" if reduce_range else "8")
        onnx.save(m, str(tmp))
    return path


def _softmax_nodes(path: Path) -> list[str]:
    """The probabilities' softmax stays in float: quantized to 8 bits it would round small probabilities to 0."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Softmax", "Div")]


def _normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((images.astype(np.float32)[:, None] / 255.0 - mean) / std).astype(np.float32)


class _WithProbabilities(torch.nn.Module):
    """The model with a second output: class probabilities softmax(logits / T), calibrated with the run's
    temperature (T = 1 for a run without one)."""

    def __init__(self, model: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, torch.softmax(logits / self.temperature, dim=1)


class OnnxModel:
    """An exported model run by onnxruntime: logits for uint8 images, no PyTorch needed at inference.

    Given a run directory, the int8 model (model.int8.onnx, from `fmnist export --quantize int8`) when there is one,
    else model.onnx; `self.path` says which."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        require_extra("export", "onnxruntime")
        import onnxruntime as ort

        p = Path(path)
        if p.is_dir():
            p = p / INT8_ONNX if (p / INT8_ONNX).is_file() else p / ONNX
        self.path = p
        if not p.is_file():
            raise FmnistError(f"{p}: no ONNX model (run `fmnist export RUN_DIR` first)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
            props = self.session.get_modelmeta().custom_metadata_map
            info = json.loads(props["fmnist"]) if props.get("fmnist") else {}
        except RecursionError:
            raise FmnistError(f"{p}: ONNX metadata nested too deeply (not exported by fmnist)") from None
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own kinds for a damaged or foreign file)
            raise FmnistError(f"{p}: not a readable ONNX model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
        norm = info.get("normalize", {"mean": MEAN, "std": STD}) if isinstance(info, dict) else None
        if not (isinstance(norm, dict) and all(isinstance(norm.get(k), int | float) and not isinstance(norm[k], bool)
                                               for k in ("mean", "std")) and norm["std"] > 0):
            raise FmnistError(f"{p}: ONNX metadata 'fmnist' is not what fmnist exports (normalize mean and std)")
        self.class_names = info.get("class_names")
        self.mean, self.std = norm["mean"], norm["std"]
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != ["input"] or "logits" not in [o.name for o in outputs]:
            raise FmnistError(f"{p}: an ONNX model without fmnist's input 'input' and output 'logits'")
        self.classes = next((o.shape[1] for o in outputs if o.name == "logits" and len(o.shape) == 2
                             and isinstance(o.shape[1], int)), None)
        bits = props.get("weight_bits")
        # set when an int8 file made for a CPU with VNNI runs on one without: its answers lose accuracy
        self.warning = (f"{p}: 8-bit int8 weights on a CPU without VNNI lose accuracy here (2.3 points for the "
                        "`fast` model); re-export on this CPU (`fmnist export RUN_DIR --quantize int8`, 7-bit "
                        "weights)") if bits == "8" and int8_saturates() else None

    def logits(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(N, C) logits for uint8 images (N, 28, 28)."""
        x = _normalize(images, self.mean, self.std)
        out = [self.session.run(["logits"], {"input": x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(out)


@dataclass(frozen=True)
class Agreement:
    """The exported ONNX model against PyTorch on the same images."""

    n: int
    same_prediction: float  # fraction of images with the same predicted class
    max_abs_logit_diff: float


def agreement(run_dir: str | os.PathLike, images: np.ndarray) -> Agreement:
    """How often the ONNX model's predictions equal PyTorch's, and the largest logit difference."""
    from fmnist.inference import load_checkpoint, numpy_logits
    from fmnist.metrics import accuracy

    model, _ = load_checkpoint(run_dir)
    a = numpy_logits(model, images)
    b = OnnxModel(Path(run_dir) / ONNX).logits(images)
    return Agreement(len(images), accuracy(a.argmax(1), b), float(np.abs(a - b).max()))


@dataclass(frozen=True)
class Backend:
    """One ONNX file's figures: accuracy, batch-1 latency (median), batch throughput (best), size."""

    path: str
    accuracy: float
    latency_ms_batch1: float
    images_per_second: float
    megabytes: float


@dataclass(frozen=True)
class Int8Comparison:
    """fp32 against int8 ONNX on the same images, measured side by side in one process."""

    n: int
    fp32: Backend
    int8: Backend

    @property
    def accuracy_drop_points(self) -> float:
        return 100 * (self.fp32.accuracy - self.int8.accuracy)

    @property
    def latency_speedup(self) -> float:
        return self.fp32.latency_ms_batch1 / self.int8.latency_ms_batch1

    @property
    def throughput_speedup(self) -> float:
        return self.int8.images_per_second / self.fp32.images_per_second

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "accuracy_drop_points": self.accuracy_drop_points,
                "latency_speedup": self.latency_speedup, "throughput_speedup": self.throughput_speedup}


def compare_int8(run_dir: str | os.PathLike, images: np.ndarray, labels: np.ndarray, tta: bool | str = False,
                 latency_calls: int = 300, batch: int = 1024, repeats: int = 5) -> Int8Comparison:
    """fp32 against int8 ONNX, measured side by side in one process: accuracy on (test) images, batch-1 latency
    (median of `latency_calls` single-image calls) and batch-`batch` throughput (best of `repeats`)."""
    import time

    from fmnist.metrics import accuracy

    out: dict[str, Backend] = {}
    for name, path in (("fp32", Path(run_dir) / ONNX), ("int8", Path(run_dir) / INT8_ONNX)):
        m = OnnxModel(path)
        views = tta_arrays(images, tta)
        logits = sum(m.logits(v) for v in views) / len(views)
        one = _normalize(images[:1], m.mean, m.std)
        for _ in range(20):
            m.session.run(["logits"], {"input": one})
        times = []
        for i in range(latency_calls):
            x = _normalize(images[i % len(images)][None], m.mean, m.std)
            t = time.perf_counter()
            m.session.run(["logits"], {"input": x})
            times.append(time.perf_counter() - t)
        xb = _normalize(images[:batch], m.mean, m.std)
        best = min(_timed(m.session, xb) for _ in range(repeats))
        out[name] = Backend(str(path), accuracy(labels, logits), 1000 * float(np.median(times)), len(xb) / best,
                            path.stat().st_size / 1e6)
    return Int8Comparison(int(len(images)), out["fp32"], out["int8"])


def _timed(session: object, x: np.ndarray) -> float:
    import time

    t = time.perf_counter()
    session.run(["logits"], {"input": x})
    return time.perf_counter() - t


INT8_BUDGET_POINTS = 0.3  # the test-accuracy loss int8 may cost and still be called a success


def check_int8_options(calibration_images: int, weight_bits: str | int) -> None:
    """One line unless `export_int8` can take these settings (checked before any work)."""
    if weight_bits not in ("auto", 7, 8, "7", "8"):
        raise FmnistError(f"weight bits must be auto, 7 or 8, got {weight_bits!r}")
    if calibration_images < 1:
        raise FmnistError(f"--calibration-images must be at least 1, got {calibration_images}")


@dataclass(frozen=True)
class Int8Export:
    """`fmnist export --quantize int8`: the file written, how, and its comparison with fp32 (int8.json)."""

    path: Path
    comparison: Int8Comparison
    weight_bits: int
    why: str  # the reason for the bits, when chosen automatically
    calibration_images: int
    split: str  # the images compared on: "test", or "training" without a test split

    @property
    def within_budget(self) -> bool:
        return self.comparison.accuracy_drop_points <= INT8_BUDGET_POINTS

    def to_dict(self) -> dict[str, Any]:
        """int8.json's content."""
        return {**self.comparison.to_dict(), "path": str(self.path), "weight_bits": self.weight_bits, "why": self.why,
                "calibration_images": self.calibration_images, "split": self.split,
                "within_budget": self.within_budget}


def export_int8(run_dir: str | os.PathLike, ds: Any, calibration_images: int = 1024,
                weight_bits: str | int = "auto") -> Int8Export:
    """`fmnist export --quantize int8` in one call: write RUN_DIR/model.int8.onnx from the run's model.onnx
    (activation ranges from the first `calibration_images` training images of `ds`), compare it with fp32 on the
    test split (the training split when there is none) and write RUN_DIR/int8.json."""
    from fmnist.config import tta_views_of
    from fmnist.files import write_json
    from fmnist.inference import load_checkpoint

    check_int8_options(calibration_images, weight_bits)
    bits = int8_weight_bits(None if weight_bits == "auto" else int(weight_bits))
    q = quantize_int8(run_dir, ds.train.images[:calibration_images], weight_bits=bits)
    split = ds.test if ds.test is not None else ds.train
    tta = tta_views_of(load_checkpoint(run_dir)[1].get("config", {}))
    r = compare_int8(run_dir, split.images, split.labels, tta=tta)
    why = "" if weight_bits != "auto" else \
        "this CPU has no VNNI (8-bit products would saturate)" if bits == 7 else "this CPU has VNNI"
    result = Int8Export(q, r, bits, why, min(calibration_images, len(ds.train)),
                        "test" if ds.test is not None else "training")
    write_json(q.parent / INT8_REPORT, result.to_dict())
    return result


def format_int8(r: Int8Export) -> str:
    """What `fmnist export --quantize int8` prints of `export_int8`'s result."""
    q, c = r.path, r.comparison
    lines = [f"wrote {q} ({q.stat().st_size / 1e6:.1f} MB): activation ranges from {r.calibration_images:,} "
             f"training images, {r.weight_bits}-bit weights{', as ' + r.why if r.why else ''}; "
             "`--backend onnx` now uses it",
             f"{'':<6}{'accuracy':>10}{'batch-1 latency':>17}{'batch-1024':>16}{'size':>9}"]
    for name, v in (("fp32", c.fp32), ("int8", c.int8)):
        lines.append(f"{name:<6}{v.accuracy:>10.2%}{v.latency_ms_batch1:>14.3f} ms"
                     f"{v.images_per_second:>10,.0f} img/s{v.megabytes:>6.1f} MB")
    lines.append(f"int8 on {c.n:,} {r.split} images: accuracy {-c.accuracy_drop_points:+.2f} points "
                 f"({'within' if r.within_budget else 'OVER'} the {INT8_BUDGET_POINTS}-point budget), batch-1 "
                 f"latency x{c.latency_speedup:.2f}, throughput x{c.throughput_speedup:.2f} (wrote int8.json)")
    return "\n".join(lines)
