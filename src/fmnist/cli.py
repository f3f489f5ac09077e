"""The `fmnist` command: argument parsing only; the work is done by the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fmnist.errors import FmnistError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH",
                   help="IDX directory, Kaggle CSV (train), directory of CSVs, or .npz "
                        "(default: $FMNIST_DATA, ./data, /usr/share/datasets/fashion-mnist)")
    g.add_argument("--test-data", metavar="PATH", help="test split, when --data names a train file only")
    g.add_argument("--no-clean", action="store_true",
                   help="use the data as read (duplicates kept; fails on rows with missing/invalid cells)")
    g.add_argument("--limit", type=int, metavar="N", help="use only the first N training rows (quick runs)")
    g.add_argument("--test-limit", type=int, metavar="N", help="use only the first N test rows")


def _load(args: argparse.Namespace):  # noqa: ANN202
    from fmnist.data import load_dataset

    return load_dataset(args.data, args.test_data, clean=not args.no_clean, limit=args.limit,
                        test_limit=args.test_limit)


def cmd_data(args: argparse.Namespace) -> int:
    from fmnist.explore import describe_data, format_summary

    ds = _load(args)
    report = describe_data(ds, args.out, plots=not args.no_plots)
    print(format_summary(report))
    if args.out:
        print(f"wrote {args.out}/data_report.json" + (f" and {len(report['pictures'])} pictures"
                                                       if report.get("pictures") else ""))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from fmnist.models import create_model, list_models, model_info

    names = list_models()
    if not names:
        print("no models registered")
        return 0
    print(f"{'name':<24}{'family':<12}{'params':>12}  description")
    for name in names:
        info = model_info(name)
        n = sum(p.numel() for p in create_model(name, weights="none").parameters()) \
            if info.pretrained else sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:<24}{info.family:<12}{n:>12,}  {info.description}")
    return 0


def _add_training_commands(sub: argparse._SubParsersAction) -> None:
    pass


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fmnist",
        description="Train, compare, explain and serve classifiers for Fashion-MNIST "
                    "(and any MNIST-like 28x28 dataset).",
        epilog="Run `fmnist COMMAND --help` for a command's options.")
    from fmnist import __version__

    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("data", help="audit, clean and draw the data",
                       description="Read the data, report missing/invalid cells, duplicates, conflicting "
                                   "labels, train/test leakage and class balance; write data_report.json "
                                   "and pictures with --out.")
    _add_data_args(p)
    p.add_argument("--out", metavar="DIR", help="write data_report.json and PNGs here")
    p.add_argument("--no-plots", action="store_true", help="skip the pictures")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=cmd_models)

    _add_training_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fmnist` command; bad input exits 2 with one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FmnistError as e:
        print(f"fmnist: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmnist: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
