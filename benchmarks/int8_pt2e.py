"""PyTorch's own int8 path (PT2E + X86InductorQuantizer + inductor) for a trained run, beside fp32 PyTorch.

    pip install torchao            # PT2E quantization lives in torchao since PyTorch 2.6; not an fmnist dependency
    python benchmarks/int8_pt2e.py RUN_DIR [--calibration 1024] [--json]

The other int8 route, `fmnist export RUN --quantize int8`, uses onnxruntime; this script answers the issue's
"measure both": it quantizes the run's model with PT2E (static, per-channel weights, the same 1,024 training images
to calibrate), lowers it with torch.compile (inductor, freezing on), and prints test accuracy with the run's TTA
views, batch-1 latency and batch-1024 throughput of fp32 eager, fp32 compiled and int8 compiled, measured in one run,
plus the compile times. Nothing here is timed in the tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from fmnist.data import load_dataset, to_input
from fmnist.inference import tta_views
from fmnist.run import Run


def _accuracy(fn, x: torch.Tensor, y: np.ndarray, tta: str) -> float:
    with torch.inference_mode():
        logits = 0
        for view in tta_views(x, tta):
            logits = logits + torch.cat([fn(view[i:i + 1024].contiguous()) for i in range(0, len(view), 1024)])
    return float((logits.argmax(1).numpy() == y).mean())


def _latency_ms(fn, x1: torch.Tensor, reps: int = 300) -> float:
    with torch.inference_mode():
        for _ in range(20):
            fn(x1)
        t = time.perf_counter()
        for _ in range(reps):
            fn(x1)
    return (time.perf_counter() - t) / reps * 1e3


def _throughput(fn, xb: torch.Tensor, reps: int = 10) -> float:
    with torch.inference_mode():
        fn(xb)
        t = time.perf_counter()
        for _ in range(reps):
            fn(xb)
    return reps * len(xb) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--calibration", type=int, default=1024, help="training images to calibrate on")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from torch._inductor import config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    run = Run.load(args.run_dir)
    # the model in NCHW: inductor picks the layouts itself (with NHWC weights its 1-channel first convolution
    # fails a stride check)
    model = run.model.float().eval().to(memory_format=torch.contiguous_format)
    tta = run.config.tta_views
    ds = load_dataset()
    x_test, y_test = to_input(ds.test.images), ds.test.labels
    calib = to_input(ds.train.images[np.random.default_rng(0).choice(len(ds.train), args.calibration, False)])
    x1, xb = x_test[:1].contiguous(), x_test[:1024].contiguous()

    inductor_config.freezing = True  # constant-fold the weights: what makes the int8 kernels (and fp32) fast
    out: dict[str, dict] = {}
    eager = copy.deepcopy(model).to(memory_format=torch.channels_last)  # as fmnist's own inference runs

    def fp32_eager(x: torch.Tensor) -> torch.Tensor:
        return eager(x.contiguous(memory_format=torch.channels_last))

    out["fp32 eager"] = {"fn": fp32_eager, "compile_s": 0.0}

    t = time.perf_counter()
    fp32c = torch.compile(model)
    with torch.inference_mode():
        fp32c(x1), fp32c(xb)
    out["fp32 compiled"] = {"fn": fp32c, "compile_s": time.perf_counter() - t}

    t = time.perf_counter()
    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(model, (xb,), dynamic_shapes=({0: batch},)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    # the first convolution (1 input channel, 8 or 32 filters) stays fp32: its int8 lowering fails inductor's
    # stride check on a 1-channel input (torch 2.14 / torchao 0.18), and it is a small share of the work
    first = next(name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    quantizer.set_module_name_qconfig(first, None)
    prepared = prepare_pt2e(exported, quantizer)
    with torch.inference_mode():
        for i in range(0, len(calib), 256):
            prepared(calib[i:i + 256])
    int8 = convert_pt2e(prepared)
    int8c = torch.compile(int8)
    with torch.inference_mode():
        int8c(x1), int8c(xb)
    out["int8 PT2E compiled"] = {"fn": int8c, "compile_s": time.perf_counter() - t}

    for r in out.values():
        fn = r.pop("fn")
        r["test_accuracy"] = _accuracy(fn, x_test, y_test, tta)
        r["batch1_ms"] = _latency_ms(fn, x1)
        r["batch1024_img_s"] = _throughput(fn, xb)
    if args.json:
        print(json.dumps({"run": str(args.run_dir), "tta": tta, "threads": torch.get_num_threads(), "results": out}))
        return 0
    print(f"{'':22}{'accuracy':>9}{'batch-1 ms':>12}{'batch-1024 img/s':>18}{'compile s':>11}   (TTA: {tta or 'none'})")
    for name, r in out.items():
        print(f"{name:22}{r['test_accuracy']:>9.2%}{r['batch1_ms']:>12.3f}{r['batch1024_img_s']:>18,.0f}"
              f"{r['compile_s']:>11.1f}")
    base, q = out["fp32 eager"], out["int8 PT2E compiled"]
    speed = q["batch1024_img_s"] / base["batch1024_img_s"]
    print(f"int8 vs fp32 eager: accuracy {100 * (q['test_accuracy'] - base['test_accuracy']):+.2f} points, "
          f"latency x{base['batch1_ms'] / q['batch1_ms']:.2f}, throughput x{speed:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
