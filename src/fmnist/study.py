"""`fmnist study`: the data audit, then every technique of the reference projects (shared/seeds), compared in
one report.

Each step writes its own directory under OUT/steps/ and a result.json when it finishes; a rerun with the same
--out skips finished steps (an interrupted study resumes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmnist.config import TrainConfig

if TYPE_CHECKING:
    from fmnist.run import RunMetrics
from fmnist.data import Dataset, subset
from fmnist.errors import FmnistError
from fmnist.files import prepare_out_dir, write_json

SEED_MODELS = ("mlp_jackson", "lenet5", "cnn_basic", "cnn_bn", "cnn_seed000")


@dataclass(frozen=True)
class Profile:
    """How much work each technique gets."""

    name: str
    limit: int | None  # training rows used (None: all)
    test_limit: int | None  # test rows used (None: all 10,000)
    max_epochs: int | None  # cap on each recipe's epochs (None: the reference project's own)
    short_schedule: bool  # cosine schedule and lr >= 1e-3, so a capped run still converges
    folds: int
    tune_trials: int
    tune_limit: int | None  # rows for the search (its validation split is a fifth of them)
    tune_epochs: int
    transfer: tuple[str, ...]
    transfer_limit: int | None
    preset: str  # fmnist's own recipe (fmnist.presets) for the last step
    preset_epochs: int | None  # cap on the preset's epochs (None: as the preset says)


PROFILES = {
    "tiny": Profile("tiny", 300, 200, 1, True, 2, 2, 300, 1, ("efficientnet_lite0_tl",), 300, "fast", 1),
    "quick": Profile("quick", None, None, 3, True, 3, 4, 12000, 2, ("efficientnet_lite0_tl",), 12000, "fast", None),
    "full": Profile("full", None, None, None, False, 5, 20, None, 8,
                    ("efficientnet_lite0_tl", "vgg16_tl", "vgg19_tl", "resnet50_tl"), None, "max", None),
}


def _recipe(model: str, profile: Profile, **over: Any) -> TrainConfig:
    from fmnist.models import model_info

    r = dict(model_info(model).recipe or {})
    if profile.max_epochs is not None:
        r["epochs"] = min(r.get("epochs", 10), profile.max_epochs)
    if profile.short_schedule:
        r["schedule"] = "cosine"
        r["lr"] = max(r.get("lr", 1e-3), 1e-3)
    r.update(over)
    return TrainConfig(model=model, **r)


def plan(profile: Profile) -> list[dict]:
    """The steps of a study: technique, model, and how to run it."""
    steps: list[dict] = [{"key": "data", "technique": "data audit"}]
    for m in SEED_MODELS:
        steps.append({"key": f"train-{m}", "technique": "reference recipe", "model": m, "config": _recipe(m, profile)})
    steps.append({"key": "augment-cnn_bn", "technique": "augmentation", "model": "cnn_bn",
                  "config": _recipe("cnn_bn", profile, augment="crop,flip")})
    steps.append({"key": "tune-lenet5_tuned", "technique": "tuning (reference project 001 random search)",
                  "model": "lenet5_tuned", "config": _recipe("lenet5_tuned", profile)})
    steps.append({"key": "cv-lenet5", "technique": f"{profile.folds}-fold cross-validation", "model": "lenet5",
                  "config": _recipe("lenet5", profile)})
    for m in profile.transfer:
        steps.append({"key": f"transfer-{m}", "technique": "transfer learning", "model": m,
                      "config": _recipe(m, profile)})
    from fmnist.presets import get_preset

    p = get_preset(profile.preset)
    cfg = p.train_config()
    if profile.preset_epochs:
        cfg = dataclasses.replace(cfg, epochs=min(cfg.epochs, profile.preset_epochs))
    steps.append({"key": f"preset-{p.name}", "technique": f"fmnist preset {p.name}",
                  "model": p.model, "config": cfg})
    return steps


def run_study(profile_name: str, out_dir: str | os.PathLike, data: str | None = None,
              test_data: str | None = None, progress: bool | None = None, log: Any = print) -> dict:
    """Run (or resume) every step of the study; write results.json and report.html."""
    from fmnist.data import load_dataset

    if profile_name not in PROFILES:
        raise FmnistError(f"profile '{profile_name}' unknown; choose from {', '.join(PROFILES)}")
    profile = PROFILES[profile_name]
    full = load_dataset(data, test_data)
    for line in full.changes():
        log(f"data: {line}")
    out = prepare_out_dir(out_dir, existing="keep")  # finished steps in it are kept: the study resumes
    (out / "steps").mkdir(exist_ok=True)
    ds = dataclasses.replace(full, train=subset(full.train, profile.limit) if profile.limit else full.train,
                             test=subset(full.test, profile.test_limit)
                             if profile.test_limit and full.test is not None else full.test)
    steps = plan(profile)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for i, step in enumerate(steps, start=1):
        sdir = out / "steps" / step["key"]
        done = sdir / "result.json"
        head = f"[{i}/{len(steps)}] {step['technique']}" + (f": {step['model']}" if "model" in step else "")
        if done.exists():
            log(f"{head} (done earlier)")
            rows.append(json.loads(done.read_text()))
            continue
        log(f"{head}  ({time.perf_counter() - t0:.0f}s elapsed)")
        ts = time.perf_counter()
        try:
            row = _run_step(step, ds, full, profile, sdir, progress)
        except FmnistError as e:  # e.g. ImageNet weights not available offline: reported, not fatal
            row = {"skipped": str(e)}
            log(f"  skipped: {e}")
        row.update({"key": step["key"], "technique": step["technique"], "model": step.get("model"),
                    "step_seconds": time.perf_counter() - ts, "dir": str(sdir.relative_to(out))})
        write_json(done, row)
        rows.append(row)
    from fmnist.run import provenance

    results = {"profile": dataclasses.asdict(profile), "steps": rows, "seconds": time.perf_counter() - t0,
               "data": full.source, "provenance": provenance()}
    write_json(out / "results.json", results)
    from fmnist.report import write_report

    write_report(results, out)
    return results


def _run_step(step: dict, ds: Dataset, full: Dataset, profile: Profile, sdir: Path, progress: bool) -> dict:
    from fmnist.models import model_info

    quiet = lambda *_: None  # noqa: E731  (the study prints its own step lines)
    key = step["key"]
    if key == "data":
        from fmnist.data.report import describe_data

        r = describe_data(full, sdir)
        return {"rows_kept": {s: r[s]["rows_kept"] for s in ("train", "test") if s in r},
                "train_test_overlap": r["train_test_overlap"]}
    cfg: TrainConfig = step["config"]
    info = model_info(cfg.model)
    row: dict = {"reference_accuracy": info.reference_accuracy, "config": cfg.to_dict()}
    if key.startswith("tune-"):
        from fmnist.tuning import SPACES, tune

        tds = dataclasses.replace(ds, train=subset(ds.train, profile.tune_limit) if profile.tune_limit else ds.train)
        base = dataclasses.replace(cfg, epochs=profile.tune_epochs)
        r = tune(base, tds, SPACES["seed001"], sdir, sampler="random", trials=profile.tune_trials, retrain=False,
                 log=quiet)
        if not r.complete:  # stopped by Ctrl-C after a trial: the study stops; a rerun resumes the search
            raise KeyboardInterrupt
        from fmnist.run import train_run
        from fmnist.tuning import apply_params

        m = train_run(apply_params(cfg, r.best_params), ds, sdir / "best", progress=progress, log=quiet,
                      existing="overwrite").metrics  # overwrite: an unfinished earlier attempt of this step
        row.update(_metrics_row(m), best_params=r.best_params, n_trials=r.n_trials)
        return row
    if key.startswith("cv-"):
        from fmnist.cv import cross_validate

        s = cross_validate(cfg, ds, profile.folds, sdir, progress=progress, log=quiet)
        if not s.complete:
            raise KeyboardInterrupt
        row.update(test_accuracy=s.test_accuracy.mean, test_accuracy_std=s.test_accuracy.std,
                   val_accuracy=s.val_accuracy.mean, val_accuracy_std=s.val_accuracy.std,
                   train_seconds=sum(f.train_seconds for f in s.per_fold), folds=profile.folds)
        return row
    use = ds
    if key.startswith("transfer-") and profile.transfer_limit:
        use = dataclasses.replace(ds, train=subset(ds.train, profile.transfer_limit))
    from fmnist.run import train_run

    m = train_run(cfg, use, sdir, progress=progress, log=quiet, existing="overwrite").metrics
    row.update(_metrics_row(m))
    return row


def _metrics_row(m: RunMetrics) -> dict:
    return {"test_accuracy": m.test_accuracy, "test_loss": m.test_loss, "val_accuracy": m.val_accuracy,
            "train_seconds": m.train_seconds, "parameters": m.parameters,
            "train_images_per_second": m.train_images_per_second}
