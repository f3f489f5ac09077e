"""`fmnist study`: the data audit, then every technique of the five reference projects
(docs/reference-projects.md), reproduced fairly and compared with their published figures in one report.

Each kind of step is a function returning a typed `Row` (what fmnist measured, its 95% interval, the reference
figure, the verdict, and the `fmnist` command that reproduces it). A finished step writes its row to
OUT/steps/KEY/result.json, so a rerun with the same --out skips it (an interrupted study resumes).
Every choice is made on validation splits; the test set is used once per row, for the figure reported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.config import TrainConfig
from fmnist.data import Dataset
from fmnist.errors import FmnistError, Unavailable
from fmnist.files import prepare_out_dir, write_json
from fmnist.recipes import (
    CV_FIGURE,
    REFERENCE_MODELS,
    TRANSFER_FIGURE,
    TUNE_FIGURE,
    Figure,
    Profile,
    get_preset,
    get_profile,
)
from fmnist.rundir import AUGMENTATION, CONFUSION, EMBEDDING, LEARNING_CURVES, MISCLASSIFIED, RELIABILITY, RunDir


@dataclass(frozen=True)
class Row:
    """One line of the verdict table: a technique, what fmnist measured on the test set, and the reference."""

    key: str  # the step, e.g. "train-cnn_bn"; its files are under steps/KEY
    technique: str
    model: str
    test_accuracy: float  # 0..1 (the mean over folds for cross-validation)
    ci95: tuple[float, float]  # 95% interval of test_accuracy
    interval: str  # how ci95 was computed
    reference_figure: float | None  # the reference project's published figure this row reproduces (0..1)
    reference: str | None  # which figure that is
    verdict: str  # above / below the reference beyond noise, or within noise of it
    train_seconds: float
    parameters: int | None
    command: str  # the fmnist command that reproduces the row
    recipe: str  # the settings, in words
    val_accuracy: float | None = None  # kept weights on the run's validation split; None without one
    details: dict[str, Any] = field(default_factory=dict)  # what else the technique measured
    pictures: list[str] = field(default_factory=list)  # PNGs of the step, relative to the study directory
    run_dir: str | None = None  # the run whose test predictions the row reports (relative); None for CV's 5 models

    @property
    def difference(self) -> float | None:
        """fmnist minus the reference figure."""
        return None if self.reference_figure is None else self.test_accuracy - self.reference_figure

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict (results.json's rows)."""
        return {**dataclasses.asdict(self), "ci95": list(self.ci95), "difference": self.difference}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        """From result.json."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "seed_figure" in d:  # a result.json written by the previous release
            d = {**d, "reference_figure": d["seed_figure"]}
        return cls(**{k: (tuple(v) if k == "ci95" else v) for k, v in d.items() if k in names})


def verdict(ci95: tuple[float, float], reference: float | None) -> str:
    """Whether fmnist's interval lies above, below or around the reference figure."""
    if reference is None:
        return "no reference figure"
    if ci95[0] > reference:
        return "above the reference, beyond noise"
    if ci95[1] < reference:
        return "below the reference, beyond noise"
    return "within noise of the reference"


# ----------------------------------------------------------------------------------------------- commands
def _flag(k: str, v: Any) -> list[str]:
    if isinstance(v, bool):
        return [f"--{k.replace('_', '-')}" if v else f"--no-{k.replace('_', '-')}"]
    return [f"--{k.replace('_', '-')}", f"{v:g}" if isinstance(v, float) else str(v)]


def command_for(config: TrainConfig, verb: str = "train", extra: list[str] | None = None,
                data: list[str] | None = None) -> str:
    """The shortest `fmnist` command line whose config equals `config` (flags for what differs from the
    model's recipe)."""
    from fmnist.recipes import PRESETS

    for name in PRESETS:  # a preset's own config: its name says it all
        if verb == "train" and config == TrainConfig.for_model(name):
            return shlex.join(["fmnist", "train", name, *(extra or []), *(data or [])])
    base = TrainConfig.for_model(config.model)
    parts = ["fmnist", verb, config.model]
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model", "model_params", "device"):
            continue
        v = getattr(config, f.name)
        if v != getattr(base, f.name):
            parts += _flag(f.name, v)
    for k, v in config.model_params.items():
        parts += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    return shlex.join([*parts, *(extra or []), *(data or [])])


def describe(config: TrainConfig) -> str:
    """A recipe in words: '15 epochs, adam lr 0.003 onecycle, batch 128, augment crop,flip'."""
    s = f"{config.epochs} epochs, {config.optimizer} lr {config.lr:g} {config.schedule}, batch {config.batch_size}"
    if config.augment:
        s += f", augment {config.augment}"
    if config.model_params:
        s += ", " + ", ".join(f"{k}={v}" for k, v in config.model_params.items())
    if config.val_fraction == 0:
        s += ", no validation split"
    return s


def recipe(model: str, profile: Profile, **over: Any) -> TrainConfig:
    """The config of a model in this profile: its reference recipe, with the profile's settings over it."""
    settings = dict((profile.recipes or {}).get(model, {}))
    settings.update(over)
    cfg = TrainConfig.for_model(model, **settings)
    if profile.epoch_cap is not None:
        cfg = cfg.replace(epochs=min(cfg.epochs, profile.epoch_cap))
    return cfg


# ------------------------------------------------------------------------------------------------- steps
def _wilson_row(test_accuracy: float, n: int) -> tuple[tuple[float, float], str]:
    from fmnist.metrics import wilson_interval

    return wilson_interval(round(test_accuracy * n), n), f"Wilson, {n:,} test images"


def _run_pictures(run_dir: Path, root: Path, misclassified: bool = False) -> list[str]:
    # the report embeds these; the pictures of trust (mistakes with their heatmaps, reliability, the embedding
    # map) only where asked, to keep the page under 3 MB
    names = (LEARNING_CURVES, AUGMENTATION, CONFUSION) + ((MISCLASSIFIED, RELIABILITY, EMBEDDING) if misclassified
                                                         else ())
    return [str((run_dir / f).relative_to(root)) for f in names if (run_dir / f).exists()]


def train_step(key: str, technique: str, config: TrainConfig, ds: Dataset, root: Path, reference: Figure | None,
               progress: bool | None, data_args: list[str], mlflow: str | None = None) -> Row:
    """Train one model with one config, test it once."""
    from fmnist.run import finished, train_run

    sdir = root / "steps" / key
    run = finished(train_run(config, ds, sdir, progress=progress, log=_quiet, existing="overwrite", mlflow=mlflow))
    m = run.metrics
    ci, how = _wilson_row(m.test_accuracy, m.test.n)
    ref, ref_text = (reference.accuracy, reference.text) if reference and ds.fashion else (None, None)
    explained = technique.startswith("fmnist")  # the preset's row shows what the model learned
    missing: dict[str, str] = {}
    if explained:
        from fmnist.explain import embedding_map

        try:
            embedding_map(run.model, ds.test.images, ds.test.labels, m.test.predictions, ds.class_names,
                          sdir / EMBEDDING)
        except Unavailable as e:  # without the explain extra the row has its figures, not the map
            missing["embedding_map"] = str(e)
    return Row(key, technique, config.model, m.test_accuracy, ci, how, ref, ref_text, verdict(ci, ref),
               m.train_seconds, m.parameters, command_for(config, data=data_args), describe(config),
               m.val_accuracy,
               details={"calibration": _plain(m.test.calibration), "conformal": _plain(m.test.conformal), **missing},
               pictures=_run_pictures(sdir, root, misclassified=explained), run_dir=str(sdir.relative_to(root)))


def tune_step(key: str, config: TrainConfig, ds: Dataset, profile: Profile, root: Path,
              progress: bool | None, data_args: list[str], mlflow: str | None = None) -> Row:
    """Reference project 001's random search (dense width and learning rate of its LeNet-5) on a validation
    split, then the best configuration retrained on all the training data and tested once."""
    from fmnist.run import finished, train_run
    from fmnist.tuning import SPACES, apply_params, tune

    sdir = root / "steps" / key
    tds = _first(ds, profile.tune_limit)  # the first rows, as `--limit` takes them: the command reproduces it
    search = config.replace(epochs=profile.tune_epochs)
    t0 = time.perf_counter()
    r = tune(search, tds, SPACES["reference001"], sdir, sampler="random", trials=profile.tune_trials, retrain=False,
             log=_quiet, mlflow=mlflow)
    search_seconds = time.perf_counter() - t0
    if not r.complete:  # stopped by Ctrl-C after a trial: the study stops; a rerun resumes the search
        raise KeyboardInterrupt
    best = apply_params(config, r.best_params)
    run = finished(train_run(best, ds, sdir / "best", progress=progress, log=_quiet, existing="overwrite",
                             mlflow=mlflow))
    m = run.metrics
    ci, how = _wilson_row(m.test_accuracy, m.test.n)
    limit = ["--limit", str(len(tds.train))] if len(tds.train) < len(ds.train) else []
    search_data = [a for i, a in enumerate(data_args)  # the search's own --limit replaces the study's
                   if not limit or "--limit" not in (a, data_args[i - 1] if i else "")]
    cmd = (command_for(search, "tune", ["--space", "reference001", "--sampler", "random", "--trials",
                                        str(profile.tune_trials), "--no-retrain", *limit], search_data)
           + "  # then: " + command_for(best, data=data_args))
    return Row(key, "tuning (reference project 001 random search)", config.model, m.test_accuracy, ci, how,
               *_compared(TUNE_FIGURE, ds, ci),
               m.train_seconds + search_seconds, m.parameters, cmd, describe(best),
               m.val_accuracy, details={"best_params": r.best_params, "trials": r.n_finished,
                                        "search_rows": len(tds.train), "search_epochs": profile.tune_epochs,
                                        "best_search_val_accuracy": r.best_value, "search_seconds": search_seconds},
               pictures=[str(p.relative_to(root)) for p in (sdir / "optimization_history.png", sdir / "params.png")
                         if p.exists()] + _run_pictures(sdir / "best", root),
               run_dir=str((sdir / "best").relative_to(root)))


def cv_step(key: str, config: TrainConfig, ds: Dataset, profile: Profile, root: Path, progress: bool | None,
            data_args: list[str], mlflow: str | None = None) -> Row:
    """k-fold cross-validation: one model per fold, each tested once; the row is the mean over folds."""
    from fmnist.cv import cross_validate
    from fmnist.metrics import mean_interval, wilson_interval

    sdir = root / "steps" / key
    s = cross_validate(config, ds, profile.folds, sdir, progress=progress, log=_quiet, mlflow=mlflow)
    if not s.complete:
        raise KeyboardInterrupt
    accs = [f.test_accuracy for f in s.per_fold]
    mean = float(np.mean(accs))
    # the wider of the spread over folds and the test set's own sampling noise
    t_lo, t_hi = mean_interval(accs)
    w_lo, w_hi = wilson_interval(round(mean * len(ds.test)), len(ds.test))
    ci = (max(0.0, min(t_lo, w_lo)), min(1.0, max(t_hi, w_hi)))  # an accuracy stays in 0..1
    return Row(key, f"{profile.folds}-fold cross-validation", config.model, mean, ci,
               f"mean of {len(accs)} folds: the wider of the t interval over folds and Wilson",
               *_compared(CV_FIGURE, ds, ci),
               sum(f.train_seconds for f in s.per_fold), None,
               command_for(config, "cv", ["--folds", str(profile.folds)], data_args), describe(config),
               s.val_accuracy.mean if s.val_accuracy else None,
               details={"per_fold_test_accuracy": accs, "test_accuracy_std": float(np.std(accs, ddof=1)),
                        "val_accuracy_mean": s.val_accuracy.mean if s.val_accuracy else None},
               pictures=[str(p.relative_to(root)) for p in (sdir / "fold_curves.png", sdir / "fold_metrics.png")
                         if p.exists()])


def augmentation_step(key: str, config: TrainConfig, ds: Dataset, root: Path, progress: bool | None,
                      data_args: list[str], mlflow: str | None = None) -> Row:
    """A controlled comparison: the same model, recipe, seed and budget with and without augmentation, scored
    on the same test images (paired difference with its interval and McNemar's test)."""
    from fmnist.inference import numpy_logits
    from fmnist.metrics import paired_comparison
    from fmnist.run import Run, finished, train_run

    sdir = root / "steps" / key
    arms = {}
    for arm, cfg in (("without", config.replace(augment="")), ("with", config.replace(augment="crop,flip"))):
        earlier = root / "steps" / f"train-{cfg.model}"  # the reference row's run, when it is this very arm
        if arm == "without" and RunDir(earlier).step_result.exists() and Run.load(earlier).config == cfg:
            run = Run.load(earlier)  # training is deterministic: the same config gives the same model
        else:
            run = finished(train_run(cfg, ds, sdir / arm, progress=progress, log=_quiet, existing="overwrite",
                                     mlflow=mlflow))
        pred = numpy_logits(run.model, ds.test.images, tta=cfg.tta_views).argmax(1)
        arms[arm] = (run, cfg, pred == ds.test.labels)
    (w_run, w_cfg, w_ok), (o_run, o_cfg, o_ok) = arms["with"], arms["without"]
    cmp = paired_comparison(w_ok, o_ok)
    ci, how = _wilson_row(w_run.metrics.test_accuracy, len(ds.test))
    said = ("helps, beyond noise" if cmp.ci95[0] > 0 else "hurts, beyond noise" if cmp.ci95[1] < 0
            else "makes no difference beyond noise")
    return Row(key, "augmentation (crop, flip) vs none", config.model, w_run.metrics.test_accuracy, ci, how,
               None, None, f"augmentation {said}: {100 * cmp.difference:+.2f} points "
                               f"[{100 * cmp.ci95[0]:+.2f}, {100 * cmp.ci95[1]:+.2f}], McNemar p = {cmp.p_value:.3g}",
               w_run.metrics.train_seconds + o_run.metrics.train_seconds, w_run.metrics.parameters,
               command_for(w_cfg, data=data_args) + "  # vs " + command_for(o_cfg, data=data_args),
               describe(w_cfg), w_run.metrics.val_accuracy,
               details={"without_test_accuracy": o_run.metrics.test_accuracy,
                        "with_test_accuracy": w_run.metrics.test_accuracy, "difference": cmp.difference,
                        "difference_ci95": list(cmp.ci95), "mcnemar_p": cmp.p_value, "only_with": cmp.only_a,
                        "only_without": cmp.only_b, "epochs": config.epochs},
               pictures=_run_pictures(sdir / "with", root) + _run_pictures(o_run.dir, root)[:1],
               run_dir=str((sdir / "with").relative_to(root)))


@dataclass(frozen=True)
class AgainstPreset:
    """One row against fmnist's preset on the same test images."""

    key: str
    technique: str
    model: str
    vs: str  # the preset row's key
    accuracy_difference: float  # this row minus the preset
    ci95: tuple[float, float]
    p_value: float  # McNemar's exact test
    only_this: int  # test images only this row's model gets right
    only_preset: int


def paired_with_preset(rows: list[Row], root: Path) -> list[AgainstPreset]:
    """Each row against the fmnist preset's row on the same test images: the accuracy difference, its interval
    and McNemar's p (rows of one model each, whose runs kept their test predictions)."""
    from fmnist.metrics import paired_comparison

    def correct(row: Row) -> np.ndarray | None:
        f = RunDir(root / row.run_dir).test_predictions if row.run_dir else None
        if f is None or not f.is_file():
            return None
        with np.load(f, allow_pickle=False) as z:
            return z["predicted"] == z["labels"]

    preset = next((r for r in rows if r.technique.startswith("fmnist preset")), None)
    ref = correct(preset) if preset else None
    out = []
    for r in rows:
        mine = correct(r) if r is not preset else None
        if ref is None or mine is None or len(mine) != len(ref):
            continue
        c = paired_comparison(mine, ref)
        out.append(AgainstPreset(r.key, r.technique, r.model, preset.key, c.difference, c.ci95, c.p_value, c.only_a,
                                 c.only_b))
    return out


def _compared(figure: Figure, ds: Dataset, ci: tuple[float, float]) -> tuple[float | None, str | None, str]:
    """A row's reference figure, what it is and the verdict: only on Fashion-MNIST, the data it was published on."""
    if not ds.fashion:
        return None, None, verdict(ci, None)
    return figure.accuracy, figure.text, verdict(ci, figure.accuracy)


def _plain(figures: Any) -> dict[str, Any] | None:
    """Figures as a row's details hold them: plain JSON values, as result.json gives them back."""
    return dataclasses.asdict(figures) if figures is not None else None


def _quiet(*_: Any) -> None:  # the study prints its own step lines
    pass


def _first(ds: Dataset, limit: int | None, test_limit: int | None = None) -> Dataset:
    """The first rows of each split, as `--limit` and `--test-limit` keep them."""
    def head(split: Any, n: int | None) -> Any:
        return split if n is None or split is None else split.take(np.arange(min(n, len(split))))

    return dataclasses.replace(ds, train=head(ds.train, limit), test=head(ds.test, test_limit))


# ---------------------------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class Step:
    """One planned step: a key (its directory), a title, and the call that produces its row."""

    key: str
    title: str
    run: Any  # (ds, root, progress) -> Row


@dataclass(frozen=True)
class StudyResult:
    """Everything the report shows."""

    profile: Profile
    data: dict[str, Any]  # the data audit's summary and pictures
    rows: list[Row]
    skipped: list[dict[str, str]]  # steps that could not run here, and why
    paired: list[AgainstPreset]  # each row against fmnist's preset on the same test images (McNemar)
    seconds: float
    source: str
    provenance: dict[str, Any]
    fashion: bool = True  # Fashion-MNIST: the rows are compared with the reference projects' figures

    def to_dict(self) -> dict[str, Any]:
        """results.json's content."""
        return {"profile": dataclasses.asdict(self.profile), "data": self.data,
                "rows": [r.to_dict() for r in self.rows], "skipped": self.skipped, "paired_with_preset": self.paired,
                "seconds": self.seconds,
                "source": self.source, "provenance": self.provenance, "fashion": self.fashion}


def plan(profile: Profile, data_args: list[str], mlflow: str | None = None, fashion: bool = True) -> list[Step]:
    """The steps of a study, in the order of the table; on data other than Fashion-MNIST, without the rows that
    reproduce a reference project's model (their figures were published on Fashion-MNIST)."""
    from fmnist.models import model_info

    steps = []
    for m in REFERENCE_MODELS if fashion else ():
        cfg = recipe(m, profile)
        steps.append(Step(f"train-{m}", f"reference recipe: {m}",
                          lambda ds, root, pr, k=f"train-{m}", c=cfg, r=model_info(m).reference:
                          train_step(k, "reference recipe", c, ds, root, r, pr, data_args, mlflow)))
    tcfg = recipe("lenet5_tuned", profile)
    steps.append(Step("tune-lenet5_tuned", "tuning: lenet5_tuned",
                      lambda ds, root, pr: tune_step("tune-lenet5_tuned", tcfg, ds, profile, root, pr, data_args,
                                                     mlflow)))
    ccfg = recipe(profile.cv_model, profile, **({"epochs": profile.cv_epochs} if profile.cv_epochs else {}))
    steps.append(Step(f"cv-{profile.cv_model}", f"{profile.folds}-fold cross-validation: {profile.cv_model}",
                      lambda ds, root, pr: cv_step(f"cv-{profile.cv_model}", ccfg, ds, profile, root, pr, data_args,
                                                   mlflow)))
    acfg = recipe(profile.augment_model, profile,
                  **({"epochs": profile.augment_epochs} if profile.augment_epochs else {}))
    steps.append(Step(f"augment-{profile.augment_model}", f"augmentation: {profile.augment_model}",
                      lambda ds, root, pr: augmentation_step(f"augment-{profile.augment_model}", acfg, ds, root, pr,
                                                             data_args, mlflow)))
    for m in profile.transfer:
        cfg = recipe(m, profile)
        steps.append(Step(f"transfer-{m}", f"transfer learning: {m}",
                          lambda ds, root, pr, k=f"transfer-{m}", c=cfg:
                          train_step(k, "transfer learning", c, ds, root, TRANSFER_FIGURE, pr, data_args, mlflow)))
    p = get_preset(profile.preset)
    pcfg = TrainConfig.for_model(p.name)
    if profile.preset_epochs:
        pcfg = pcfg.replace(epochs=min(pcfg.epochs, profile.preset_epochs))
    steps.append(Step(f"preset-{p.name}", f"fmnist preset {p.name}: {p.model}",
                      lambda ds, root, pr: train_step(f"preset-{p.name}", f"fmnist preset {p.name}", pcfg, ds, root,
                                                      None, pr, data_args, mlflow)))
    return steps


def run_study(profile_name: str, out_dir: str | os.PathLike, data: str | None = None,
              test_data: str | None = None, progress: bool | None = None, log: Any = print,
              mlflow: str | None = None) -> StudyResult:
    """Run (or resume) every step of the study; write results.json and report.html (and, with an MLflow URI, log
    each step's runs as nested runs of one study run)."""
    from fmnist.tracking import track

    with track(mlflow, f"study {profile_name}", tags={"kind": "study", "out": Path(out_dir).resolve()}):
        return _run_study(profile_name, out_dir, data, test_data, progress, log, mlflow)


def _run_study(profile_name: str, out_dir: str | os.PathLike, data: str | None, test_data: str | None,
               progress: bool | None, log: Any, mlflow: str | None) -> StudyResult:
    from fmnist.data import load_dataset
    from fmnist.data.report import describe_data
    from fmnist.run import provenance

    profile = get_profile(profile_name)
    full = load_dataset(data, test_data)
    if full.test is None:
        raise FmnistError(f"{full.source}: the study needs a test split (give --test-data)")
    for line in full.changes():
        log(f"data: {line}")
    out = prepare_out_dir(out_dir, existing="keep")  # finished steps in it are kept: the study resumes
    (out / "steps").mkdir(exist_ok=True)
    ds = _first(full, profile.limit, profile.test_limit)
    data_args = (["--data", str(data)] if data else []) + (["--test-data", str(test_data)] if test_data else []) \
        + (["--limit", str(profile.limit)] if profile.limit else []) \
        + (["--test-limit", str(profile.test_limit)] if profile.test_limit else [])
    t0 = time.perf_counter()
    report = describe_data(full, out / "steps" / "data")
    audit = {"rows_kept": {s: report[s]["rows_kept"] for s in ("train", "test") if s in report},
             "train_test_overlap": report["train_test_overlap"],
             "pictures": [f"steps/data/{p}" for p in report["pictures"]]}
    if not full.fashion:
        log("data: not Fashion-MNIST, so the rows that reproduce the reference projects' models are left out and "
            "no row is compared with their published figures; every other technique runs as on Fashion-MNIST")
    steps = plan(profile, data_args, mlflow, fashion=full.fashion)
    rows: list[Row] = []
    skipped: list[dict[str, str]] = []
    for i, step in enumerate(steps, start=1):
        done = RunDir(out / "steps" / step.key).step_result
        head = f"[{i}/{len(steps)}] {step.title}"
        if done.exists():
            saved = json.loads(done.read_text())
            if "skipped" in saved:
                skipped.append(saved)
            else:
                rows.append(Row.from_dict(saved))
            log(f"{head} (done earlier)")
            continue
        log(f"{head}  ({time.perf_counter() - t0:.0f}s elapsed)")
        try:
            row = step.run(ds, out, progress)
        except Unavailable as e:  # e.g. ImageNet weights not available offline: reported, not fatal
            skipped.append({"key": step.key, "title": step.title, "skipped": str(e)})
            write_json(done, skipped[-1])
            log(f"  skipped: {e}")
            continue
        write_json(done, row.to_dict())
        rows.append(row)
        log(f"  test accuracy {row.test_accuracy:.2%} [{row.ci95[0]:.2%}, {row.ci95[1]:.2%}]"
            + (f", reference {row.reference_figure:.2%}: {row.verdict}" if row.reference_figure else f"; {row.verdict}")
            + f" ({row.train_seconds:.0f} s)")
    result = StudyResult(profile, audit, rows, skipped, paired_with_preset(rows, out), time.perf_counter() - t0,
                         full.source, provenance(), full.fashion)
    write_json(out / "results.json", result.to_dict())
    from fmnist.report import write_report

    write_report(result, out)
    return result


def format_study(result: StudyResult, out: str | os.PathLike) -> str:
    """What `fmnist study` prints: one line per row (test accuracy, interval, reference figure, verdict)."""
    lines = [f"{'technique':<34}{'model':<24}{'test acc':>9}{'95% interval':>17}{'reference':>11}  verdict"]
    for r in result.rows:
        ref = f"{r.reference_figure:.2%}" if r.reference_figure is not None else "—"
        ci = f"{r.ci95[0]:.2%}-{r.ci95[1]:.2%}"
        lines.append(f"{r.technique[:33]:<34}{r.model:<24}{r.test_accuracy:>9.2%}{ci:>17}{ref:>11}  {r.verdict}")
    lines.append(f"study finished in {result.seconds / 60:.1f} min: {out}/report.html, {out}/results.json")
    return "\n".join(lines)
