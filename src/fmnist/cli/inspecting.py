"""Commands that look at data, models and runs: data, models, runs, compare, bench."""

from __future__ import annotations

import argparse

from fmnist.cli import add_data_args, load
from fmnist.errors import FmnistError


def cmd_data(args: argparse.Namespace) -> int:
    from fmnist.data.report import describe_data, format_summary

    ds = load(args)
    report = describe_data(ds, args.out, plots=not args.no_plots)
    print(format_summary(report))
    if args.out:
        print(f"wrote {args.out}/data_report.json" + (f" and {len(report['pictures'])} pictures"
                                                       if report.get("pictures") else ""))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from fmnist.models import format_models
    from fmnist.recipes import PRESETS

    print(format_models())
    print("\npresets (`fmnist train NAME`, or `--preset NAME` for another model):")
    for p in PRESETS.values():
        print(f"  {p.name:<6}{p.model:<18}{p.target}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from fmnist.compare import find_runs, format_runs, sort_runs
    from fmnist.files import dumps

    runs = sort_runs(find_runs(args.dirs or ["runs"]), args.sort)
    print(dumps([r.__dict__ for r in runs]), end="") if args.json else print(format_runs(runs))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fmnist.compare import compare_runs, format_compare

    out = args.out or "runs/compare"
    print(format_compare(compare_runs(args.runs, out), out))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fmnist.bench import bench_json, bench_options, run_bench
    from fmnist.files import prepare_out_dir, write_json

    if args.time_to_accuracy and args.time_to_reference:
        raise FmnistError("give one of --time-to-accuracy and --time-to-reference")
    mode = "time_to_accuracy" if args.time_to_accuracy else "time_to_reference" if args.time_to_reference else None
    options = dict(models=args.models, epochs=args.epochs, batch_size=args.batch_size, seeds=args.seeds,
                   timed_epochs=args.timed_epochs, preset=args.preset_given)
    bench_options(mode, **options)  # refused before the data is read
    if Path(args.out).is_dir():
        raise FmnistError(f"--out {args.out}: is a directory; bench writes a JSON file (e.g. bench.json)")
    prepare_out_dir(Path(args.out).parent, existing="keep")
    res, text = run_bench(load(args), mode, device=args.device, **options)
    if text:
        print(text)
    write_json(args.out, bench_json(res))
    print(f"wrote {args.out}")
    return 0


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """data and models: first in `fmnist --help`."""
    p = sub.add_parser("data", help="audit, clean and draw the data",
                       description="Read the data (IDX files, a Kaggle CSV, an .npz, or a folder of pictures with one "
                                   "subfolder per class), report missing/invalid cells, duplicates, conflicting "
                                   "labels, train/test leakage and class balance; write data_report.json and "
                                   "pictures with --out. Classes: 2 to 1,000, named by a classes.txt beside the "
                                   "data, by the subfolders, or by their numbers (Fashion-MNIST's own files keep "
                                   "their names).")
    add_data_args(p)
    p.add_argument("--out", metavar="DIR", help="write data_report.json and PNGs here")
    p.add_argument("--no-plots", action="store_true", help="skip the pictures")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list the registered models",
                       description="Every registered model: family, parameters and what it is (its reference "
                                   "project, where it reproduces one); the presets fast, best and max.")
    p.set_defaults(func=cmd_models)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """runs, compare, bench."""
    p = sub.add_parser("bench", help="training/inference speed beside a plain PyTorch loop",
                       description="Per model: parameters, training images/s of fmnist's loop and of the plain "
                                   "PyTorch loop (TensorDataset + DataLoader, fp32) measured side by side in one "
                                   "run, their ratio, test accuracy after the same epochs, batch-1 latency and "
                                   "large-batch inference throughput. Writes bench.json.")
    p.add_argument("--models", help="comma list (default lenet5,cnn_basic)")
    p.add_argument("--epochs", type=int, metavar="N", help="training epochs per loop (default 1)")
    p.add_argument("--batch-size", type=int, metavar="N", help="training batch size of both loops (default 128)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--time-to-accuracy", action="store_true",
                   help="instead: train --preset and print the training time at which each of 90-95%% test "
                        "accuracy was first reached")
    p.add_argument("--time-to-reference", "--time-to-seed", action="store_true",  # the old name: one release
                   help="instead: the training time to the reference projects' best figure (91.37%%, reference "
                        "project 002's CNN2) with fmnist's --preset against CNN2's own recipe in the plain PyTorch "
                        "loop (Adam 1e-4, batch 64, 50 epochs; estimated from --timed-epochs timed epochs)")
    p.add_argument("--timed-epochs", type=int, metavar="N", help="with --time-to-reference (default 2)")
    p.add_argument("--preset", dest="preset_given", metavar="PRESET",
                   help="with --time-to-accuracy (default best) or --time-to-reference (default fast): fast, best, max")
    p.add_argument("--seeds", type=int, metavar="N", help="with --time-to-accuracy: runs, for mean ± std "
                                                          "(default 1)")
    p.add_argument("--out", default="bench.json", metavar="FILE", help="results as JSON (default bench.json)")
    add_data_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("runs", help="list run directories: model, accuracy, time",
                       description="A table of the run directories under DIR (default ./runs): model, test and "
                                   "validation accuracy, training time, parameters, date.")
    p.add_argument("dirs", metavar="DIR", nargs="*")
    p.add_argument("--sort", choices=("test", "val", "time", "date", "model"), default="test",
                   help="the column to sort by (default test: the most accurate first)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="compare runs on the same test images (McNemar's test)",
                       description="Runs side by side: settings that differ, accuracy per epoch and per class, and "
                                   "for each pair the accuracy difference with its 95% interval and McNemar's exact "
                                   "test on the test images exactly one of the two gets right. Writes compare.json "
                                   "and compare.png.")
    p.add_argument("runs", metavar="RUN_DIR", nargs="+")
    p.add_argument("--out", metavar="DIR", help="default runs/compare")
    p.set_defaults(func=cmd_compare)
