"""The `fmnist` command: argument parsing and printing only; every command is one call into the library.

Each module here holds a group of subcommands, every parser next to its handler: `training` (train, study, tune,
cv, labels, evaluate, calibrate), `using` (predict, explain, export, serve), `inspecting` (data, models, runs,
compare, bench). This module holds what they share and `main`. Only what a command needs is imported, when it
runs: `fmnist --help` imports no PyTorch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fmnist.choices import PREPROCESS
from fmnist.errors import FmnistError, printable

if TYPE_CHECKING:
    from fmnist.config import TrainConfig
    from fmnist.data import Dataset

# options that name a path: an empty one would silently mean the default (or the current directory)
PATH_OPTIONS = ("out", "data", "test_data", "run_dir", "storage", "space")


def add_data_args(p: argparse.ArgumentParser) -> None:
    """--data, --test-data, --no-clean, --limit, --test-limit."""
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH",
                   help="IDX directory, Kaggle CSV (train), directory of CSVs, .npz, or a folder of pictures with "
                        "one subfolder per class, optionally under train/ and test/ "
                        "(default: $FMNIST_DATA, ./data, /usr/share/datasets/fashion-mnist)")
    g.add_argument("--test-data", metavar="PATH", help="test split, when --data names a train file only")
    g.add_argument("--no-clean", action="store_true",
                   help="use the data as read (duplicates kept; fails on rows with missing/invalid cells)")
    g.add_argument("--limit", type=int, metavar="N", help="use only the first N training rows (quick runs)")
    g.add_argument("--test-limit", type=int, metavar="N", help="use only the first N test rows")
    g.add_argument("--preprocess", choices=PREPROCESS, default="dataset",
                   help="a folder of pictures: prepare each as Fashion-MNIST's were made (dataset, default: trim, "
                        "fit the longest edge into 28, centre, negate if light), fit the whole picture, or only "
                        "resize (none); read once, then cached")


def load(args: argparse.Namespace) -> Dataset:
    """The dataset the data options name; every command says what makes the data used differ from the files."""
    from fmnist.data import load_dataset

    ds = load_dataset(args.data, args.test_data, clean=not args.no_clean, limit=args.limit,
                      test_limit=args.test_limit, preprocess=args.preprocess)
    for line in ds.changes():
        print(f"data: {printable(line)}", file=sys.stderr)
    return ds


def _parse_value(text: str) -> object:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a string


def parse_sets(items: list[str] | None) -> dict:
    """--set KEY=VALUE items as model parameters (values as JSON, or a bare word as a string)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise FmnistError(f"--set {item!r}: expected key=value, e.g. --set activation=tanh")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (type, choices and help from the dataclass), plus --set/--preset."""
    from dataclasses import fields

    from fmnist.config import TrainConfig
    from fmnist.recipes import PRESETS

    g = p.add_argument_group("training (defaults: the model's recipe, see `fmnist models`; a preset's settings "
                             "replace it)")
    for f in fields(TrainConfig):
        if f.name in ("model", "model_params"):
            continue
        flag, meta = "--" + f.name.replace("_", "-"), f.metadata
        if f.type == "bool":
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=meta["help"])
        else:
            g.add_argument(flag, type={"int": int, "float": float}.get(f.type, str), choices=meta.get("choices"),
                           metavar=None if meta.get("choices") else {"int": "N", "float": "X"}.get(f.type, "S"),
                           help=meta["help"])
    g.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a model parameter, e.g. --set activation=tanh --set dense_units=96 (repeatable)")
    g.add_argument("--no-recipe", action="store_true",
                   help="start from fmnist's generic defaults instead of the model's recipe")
    g.add_argument("--preset", metavar="NAME",
                   help=f"start from a named recipe instead of the model's: {', '.join(PRESETS)} (see `fmnist "
                        "models`); `fmnist train best` also picks the preset's model")


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig settings given as flags on a command line."""
    from dataclasses import fields

    from fmnist.config import TrainConfig

    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if f.name not in ("model", "model_params") and getattr(args, f.name, None) is not None}


def train_config_from_args(model: str, args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a command line: TrainConfig.for_model with the flags that were given."""
    from fmnist.config import TrainConfig

    return TrainConfig.for_model(model, preset=getattr(args, "preset", None), recipe=not args.no_recipe,
                                 model_params=parse_sets(args.set), **given_settings(args))


def add_run_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """Data, training, --out, --quiet and --mlflow: the options of every command that trains."""
    add_data_args(p)
    add_train_args(p)
    p.add_argument("--out", metavar="DIR", help=out_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_mlflow_arg(p, "also log to MLflow (trials and folds as nested runs): a tracking URI such as "
                      "sqlite:///mlflow.db or http://host:5000; without one $MLFLOW_TRACKING_URI or "
                      "sqlite:///mlflow.db (needs fmnist[mlflow])")


def add_mlflow_arg(p: argparse.ArgumentParser, help: str) -> None:  # noqa: A002
    p.add_argument("--mlflow", nargs="?", const="", metavar="URI", help=help)


def check_mlflow(args: argparse.Namespace) -> None:
    """Refuse --mlflow before any work when MLflow is not installed."""
    if getattr(args, "mlflow", None) is not None:
        from fmnist.errors import require_extra

        require_extra("mlflow", "mlflow")


def quiet_optuna() -> None:
    """The command line prints its own progress: Optuna's line per trial is left out (a library caller keeps
    Optuna's logging as it set it)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def progress(args: argparse.Namespace) -> bool | None:
    """--quiet: no progress bars; otherwise bars only where the output is a terminal."""
    return False if getattr(args, "quiet", False) else None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from fmnist import __version__
    from fmnist.cli import examples, inspecting, training, using

    parser = argparse.ArgumentParser(
        prog="fmnist",
        description="Train, compare, explain and serve classifiers for Fashion-MNIST "
                    "(and any MNIST-like 28x28 dataset).",
        epilog="Run `fmnist COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    inspecting.add_data_commands(sub)
    training.add_commands(sub)
    using.add_commands(sub)
    inspecting.add_commands(sub)
    examples.add_examples(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fmnist` command; bad input exits 2 with one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in PATH_OPTIONS:
        if getattr(args, name, None) == "":
            parser.error(f"--{name.replace('_', '-')}: an empty path; give one, or leave the option out")
    try:
        return int(args.func(args) or 0)
    except FmnistError as e:
        print(f"fmnist: error: {printable(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named cannot be read or written (disk full, permissions, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"fmnist: error: {printable(where)}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmnist: interrupted", file=sys.stderr)
        return 130


def or_default(value: Any, default: Any) -> Any:
    """The option's value where given (0 included), else its default."""
    return default if value is None else value


if __name__ == "__main__":
    sys.exit(main())
