"""Commands that use a trained model: predict, explain, export, serve."""

from __future__ import annotations

import argparse
import os
import sys

from fmnist.choices import EXPLAIN_METHODS, PREPROCESS
from fmnist.cli import add_data_args, load
from fmnist.errors import FmnistError, printable


def cmd_predict(args: argparse.Namespace) -> int:
    from fmnist.files import dumps
    from fmnist.predict import Predictor, describe_set, load_inputs

    predictor = Predictor(args.run_dir, backend=args.backend)
    if predictor.onnx is not None and predictor.onnx.warning:
        print(f"warning: {predictor.onnx.warning}", file=sys.stderr)
    results, failed = [], 0
    for f in args.files:  # a file that cannot be read is said and skipped; the others are answered
        notes: list[str] = []
        try:
            x, names = load_inputs(f, invert=args.invert, notes=notes, preprocess=args.preprocess)
        except FmnistError as e:
            print(f"fmnist: error: {printable(e)}", file=sys.stderr)
            failed += 1
            continue
        for note in notes:
            print(f"note: {printable(note)}", file=sys.stderr)
        for p in predictor.predictions(x, names):
            results.append(p)
            if not args.json:
                print(f"{printable(p.name)}: " + ", ".join(f"{c} {v:.1%}" for c, v in p.top(3))
                      + (f"  [{describe_set(p.set, predictor.calibration.level)}]" if p.set is not None else "")
                      + (f"  (warning: {p.warning})" if p.warning else ""))
    if args.json:
        print(dumps([{"file": p.name, "label": p.label, "index": p.index, "top3": p.top(3),
                      "probabilities": p.probabilities, "set": p.set, "warning": p.warning} for p in results]), end="")
    return 2 if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from fmnist.explain import explain_inputs

    notes: list[str] = []
    done = explain_inputs(args.run_dir, args.files, args.out, method=args.method, invert=args.invert,
                          preprocess=args.preprocess, notes=notes)
    for note in notes:
        print(f"note: {printable(note)}", file=sys.stderr)
    for e in done:
        print(f"{printable(e.name)}: {e.label} {e.probability:.1%} -> {printable(e.path)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fmnist.export import agreement, check_int8_options, export, export_int8, format_int8

    if args.check < 0:
        raise FmnistError(f"--check must be 0 (skip) or a number of test images, got {args.check}")
    if args.format == "onnx":
        from fmnist.errors import require_extra

        require_extra("export", "onnx", "onnxruntime")
    if args.weight_bits != "auto" and not args.quantize:
        raise FmnistError("--weight-bits applies only with --quantize int8")
    if args.quantize and (args.format != "onnx" or args.out is not None):
        raise FmnistError("--quantize int8 writes RUN_DIR/model.int8.onnx beside model.onnx: give --format onnx "
                          "and no --out")
    check_int8_options(args.calibration_images, args.weight_bits)
    ds = load(args) if args.quantize or (args.format == "onnx" and args.check and args.out is None) else None
    path = export(args.run_dir, args.format, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if ds is not None and args.check:
        split = ds.test if ds.test is not None else ds.train
        a = agreement(args.run_dir, split.images[:args.check])
        print(f"onnxruntime vs PyTorch on {a.n:,} images: same prediction {a.same_prediction:.4%}, "
              f"max |logit difference| {a.max_abs_logit_diff:.2e}")
    if args.quantize:
        print(format_int8(export_int8(args.run_dir, ds, args.calibration_images, args.weight_bits)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fmnist.errors import require_extra

    require_extra("serve", "fastapi", "uvicorn", "multipart", "swagger_ui_bundle")
    if args.backend == "onnx":
        require_extra("export", "onnxruntime")
    from fmnist.serve import serve

    serve(args.run_dir, args.host, args.port, backend=args.backend, max_upload_mb=args.max_upload_mb,
          allow_hosts=tuple(args.allow_host or ()), token=args.token or os.environ.get("FMNIST_TOKEN") or None,
          log=lambda line: print(line, flush=True))
    return 0


def add_input_args(p: argparse.ArgumentParser) -> None:
    """A run and the inputs to run it on, and how pictures are prepared: predict and explain."""
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("files", metavar="FILE", nargs="+")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="dark-on-light photos need inverting: auto decides from the image border")
    p.add_argument("--preprocess", choices=PREPROCESS, default="dataset",
                   help="pictures: dataset (default) prepares them as Fashion-MNIST's were made from shop photos: "
                        "trim the background, longest edge to 28, sharpen, centre; fit: the whole picture fitted "
                        "into 28x28; none: resized to 28x28. 28x28 pictures are used as they are")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """predict, explain, export, serve."""
    p = sub.add_parser("predict", help="predict the class of images, .npy arrays or CSV rows",
                       description="Top-3 classes for each input: PNG/JPEG of any size or colour (prepared as the "
                                   "dataset's images were, see --preprocess), .npy arrays (28x28, N x 784, ...) "
                                   "and CSV rows of 784 pixels.")
    add_input_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx: run the exported model with onnxruntime (RUN_DIR/model.int8.onnx when `fmnist export "
                        "--quantize int8` wrote one, else model.onnx)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("explain", help="heatmaps of what drove a run's predictions on images",
                       description="For each input (pictures, .npy arrays, CSV rows; prepared as for `predict`), "
                                   "write OUT/NAME.explain.png: the 28x28 the model saw, a heatmap of the pixels "
                                   "that drove its prediction, and the top classes with the prediction set.")
    add_input_args(p)
    p.add_argument("--out", metavar="DIR", help="where to write (default RUN_DIR/explain)")
    p.add_argument("--method", choices=EXPLAIN_METHODS, default="auto",
                   help="gradcam (convolutional nets), integrated_gradients (any model); auto (default): Grad-CAM "
                        "where the model has convolutions")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("export", help="export a run to ONNX or TorchScript",
                       description="Write RUN_DIR/model.onnx (dynamic batch axis, checked with onnxruntime "
                                   "against PyTorch on test images) or RUN_DIR/model.pt (TorchScript).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                   help="onnx (default): for onnxruntime and `--backend onnx`; torchscript: for PyTorch without "
                        "fmnist")
    p.add_argument("--out", metavar="FILE", help="default RUN_DIR/model.onnx or RUN_DIR/model.pt")
    p.add_argument("--check", type=int, default=10000, metavar="N",
                   help="test images to compare ONNX with PyTorch on (0: skip; default all 10,000)")
    p.add_argument("--quantize", choices=("int8",),
                   help="also write RUN_DIR/model.int8.onnx (onnxruntime static quantization) and compare it with "
                        "fp32: test accuracy, batch-1 latency, batch-1024 throughput; --backend onnx then uses it")
    p.add_argument("--calibration-images", type=int, default=1024, metavar="N",
                   help="training images whose activation ranges set the int8 scales (default 1024)")
    p.add_argument("--weight-bits", choices=("auto", "7", "8"), default="auto",
                   help="int8 weights: 8 for CPUs with VNNI (AVX-512 VNNI, AVX-VNNI, AMX), 7 where the products "
                        "would saturate (x86 without VNNI); auto (default) picks for this CPU: export on the kind "
                        "of CPU that will serve")
    add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve a run: JSON API and a web page",
                       description="FastAPI service: POST /predict (image upload or JSON pixels), "
                                   "/predict/batch, /explain, GET /health, /model, OpenAPI docs at /docs, a page at "
                                   "/. It prints the address to open.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (local only); 0.0.0.0: every interface")
    p.add_argument("--port", type=int, default=8000, help="default 8000 (0: any free port)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx: the exported model (`fmnist export` first), run by onnxruntime")
    p.add_argument("--max-upload-mb", type=float, default=5.0, metavar="MB",
                   help="largest request body (default 5 MB)")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="another host name requests may be addressed to (repeatable; * for any): by default only "
                        "the bound address and, for loopback, localhost, so that no other site's page reaches the "
                        "service through DNS rebinding")
    p.add_argument("--token", metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' on predictions, explanations and /model (at least "
                        "16 characters; auto: a random one, printed in the page's address; default "
                        "$FMNIST_TOKEN); for a service bound beyond loopback")
    p.set_defaults(func=cmd_serve)
