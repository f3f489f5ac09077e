"""A point of the time-budget frontier (fmnist.recipes.BUDGET_FRONTIER): a preset's recipe trained for E epochs on
a 10% validation split of the training images (54,000 train, 6,000 validate, seed 0), then its validation
accuracy with no test-time views, the mirror, and the mirror with one-pixel shifts (10 views).

    python benchmarks/frontier.py fast 3 --out /tmp/frontier      # one JSON line

The test set chooses nothing here: the run measures it, but the frontier reads validation only.
"""

import argparse
import json
import time

from fmnist.config import TrainConfig
from fmnist.data import holdout_split, load_dataset
from fmnist.inference import numpy_logits
from fmnist.run import train_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset")
    ap.add_argument("epochs", type=int)
    ap.add_argument("--out", default="/tmp/frontier")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    ds = load_dataset()
    cfg = TrainConfig.for_model(a.preset).replace(epochs=a.epochs, val_fraction=0.1, seed=a.seed)
    t = time.perf_counter()
    run = train_run(cfg, ds, f"{a.out}/{a.preset}-{a.epochs}-{a.seed}", plots=False, existing="overwrite",
                    progress=False)
    seconds = time.perf_counter() - t
    _, va = holdout_split(ds.train.labels, 0.1, a.seed)
    val = ds.train.take(va)
    acc = {views or "none": float((numpy_logits(run.model, val.images, tta=views).argmax(1) == val.labels).mean())
           for views in ("", "flip", "flip+shifts")}
    print(json.dumps({"preset": a.preset, "model": cfg.model, "epochs": a.epochs, "seed": a.seed,
                      "val_accuracy": acc, "train_seconds": run.metrics.train_seconds, "seconds": seconds}))


if __name__ == "__main__":
    main()
