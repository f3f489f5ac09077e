"""Each command's examples, shown under its --help, and the help of the positional arguments named alike."""

from __future__ import annotations

import argparse

EXAMPLES = {
    "data": ["fmnist data --out runs/data", "fmnist data --data my_pictures/ --out runs/mine",
             "fmnist data --data fashion-mnist_train.csv --test-data fashion-mnist_test.csv"],
    "models": ["fmnist models"],
    "train": ["fmnist train fast --out runs/fast", "fmnist train cnn_bn --epochs 8 --augment crop,flip",
              "fmnist train --time-budget 10m", "fmnist train best --time-budget 5m --seed 1",
              "fmnist train fast --data my_pictures/ --out runs/mine",
              "fmnist train fast --out runs/fast --resume"],
    "study": ["fmnist study --profile quick", "fmnist study --profile tiny --out /tmp/smoke"],
    "tune": ["fmnist tune cnn_bn --space lr-wd --trials 10", "fmnist tune --space reference001 --sampler random",
             "fmnist tune cnn_bn --space my_space.toml   # a TOML file: see the manual, techniques and the study"],
    "cv": ["fmnist cv lenet5 --folds 5", "fmnist cv cnn_basic --folds 5 --repeats 2 --epochs 5"],
    "labels": ["fmnist labels --out runs/labels", "fmnist labels cnn_basic --folds 3 --retrain"],
    "evaluate": ["fmnist evaluate runs/fast", "fmnist evaluate runs/mine --data my_pictures/"],
    "calibrate": ["fmnist calibrate runs/fast --level 0.95"],
    "predict": ["fmnist predict runs/fast examples/sneaker.png examples/bag.jpg",
                "fmnist predict runs/fast images.npy --json", "fmnist predict runs/fast x.npy --backend onnx"],
    "explain": ["fmnist explain runs/fast examples/dress.jpg"],
    "export": ["fmnist export runs/fast", "fmnist export runs/fast --quantize int8",
               "fmnist export runs/fast --format torchscript --out model.pt"],
    "serve": ["fmnist serve runs/fast", "fmnist serve runs/fast --host 0.0.0.0 --token auto"],
    "bench": ["fmnist bench", "fmnist bench --time-to-accuracy --preset fast --seeds 3",
              "fmnist bench --time-to-reference"],
    "runs": ["fmnist runs", "fmnist runs runs/ /tmp/other-runs"],
    "compare": ["fmnist compare runs/fast runs/best"],
}

POSITIONAL_HELP = {
    "run_dir": "a run directory written by `fmnist train` (or tune, cv --retrain, study)",
    "files": "pictures (PNG, JPEG, ...), .npy arrays of 28x28 images, or CSV files of pixel rows",
    "dirs": "directories to look for runs in (default runs/)",
    "runs": "two or more run directories tested on the same test images",
}


class Formatter(argparse.HelpFormatter):
    """argparse's formatter, but the examples keep their lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_examples(sub: argparse._SubParsersAction) -> None:
    """Give every command its examples and its positional arguments a help line."""
    for name, p in sub.choices.items():
        p.formatter_class = Formatter
        if name in EXAMPLES:
            p.epilog = "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[name])
        for a in p._actions:
            if not a.option_strings and not a.help and a.dest in POSITIONAL_HELP:
                a.help = POSITIONAL_HELP[a.dest]
