"""A training run: `train` / `train_run` -> a typed `Run` (model, config, history, metrics, directory) whose files
are config.json, history.csv, model.safetensors, metrics.json and pictures; `evaluate` measures any model on a
split (the one place accuracy on a test set is computed)."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist.budget import Plan, format_outcome, parse_duration, plan_epochs
from fmnist.config import ERASE_AREA, TrainConfig, augment_ops, tta_views_of
from fmnist.data import Dataset, Split, holdout_split
from fmnist.errors import FmnistError, Unavailable
from fmnist.files import atomic_path, prepare_out_dir, write_json
from fmnist.inference import calibrate_ood, load_checkpoint, numpy_logits, save_checkpoint
from fmnist.loop import History, fit
from fmnist.metrics import CalibrationFigures, Evaluation, SetFigures, classification_metrics, softmax
from fmnist.rundir import (
    AUGMENTATION,
    CONFUSION,
    EMBEDDING,
    LEARNING_CURVES,
    METRICS,
    MISCLASSIFIED,
    RELIABILITY,
    RunDir,
)
from fmnist.trust import Calibration

MIN_CALIBRATION = 20  # held-out images needed to fit a temperature and a prediction-set threshold
FEW_CALIBRATION = 500  # below this, a note says how far the prediction sets' coverage may stray


@dataclass(frozen=True)
class RunMetrics:
    """What a training run measured (metrics.json), one name per quantity.

    val_accuracy: accuracy on the run's validation split of the weights the run keeps (the best epoch's when early
    stopping restored them, else the last epoch's); None for a run without a validation split.
    test: the evaluation on the test split, measured once at the end (test_accuracy is test.accuracy); None when
    the data had no test split. Read fields as attributes or by name: metrics["test_accuracy"].
    """

    model: str
    parameters: int
    train_seconds: float
    train_images_per_second: float
    epochs_run: int
    best_epoch: int
    restored_best: bool
    stopped_early: bool
    interrupted: bool
    val_accuracy: float | None
    test: Evaluation | None = None

    @property
    def test_accuracy(self) -> float | None:
        """Accuracy on the test split."""
        return self.test.accuracy if self.test else None

    @property
    def test_loss(self) -> float | None:
        """Mean cross-entropy on the test split."""
        return self.test.loss if self.test else None

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's content: the test evaluation flattened into test_* keys."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "test"}
        if self.test is not None:
            t = self.test
            out.update(test_accuracy=t.accuracy, test_loss=t.loss, test_macro_f1=t.macro_f1, per_class=t.per_class,
                       confusion_matrix=t.confusion_matrix, most_confused=t.most_confused, test_rows=t.n,
                       calibration=t.calibration, conformal=t.conformal)
        return out

    def __getitem__(self, key: str) -> Any:
        d = self.to_dict()
        if key not in d:
            raise KeyError(f"{key!r}; the metrics: {', '.join(d)}")
        return d[key]

    @classmethod
    def from_dict(cls, d: dict, class_names: tuple[str, ...]) -> RunMetrics:
        """From metrics.json."""
        test = None
        if d.get("test_accuracy") is not None:
            test = Evaluation(d["test_accuracy"], d["test_loss"], d["test_macro_f1"], d["per_class"],
                              d["confusion_matrix"], d["most_confused"], d["test_rows"], class_names, "test",
                              calibration=CalibrationFigures.from_dict(d.get("calibration")),
                              conformal=SetFigures.from_dict(d.get("conformal")))
        return cls(**{f.name: d.get(f.name) for f in fields(cls) if f.name != "test"}, test=test)


@dataclass
class Run:
    """A trained model and what its run directory holds."""

    model: torch.nn.Module
    config: TrainConfig
    history: History
    metrics: RunMetrics
    dir: Path
    class_names: tuple[str, ...]
    calibration: Calibration | None = None  # temperature and prediction-set threshold, from held-out images

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Run:
        """A run from its directory (model, config, history and metrics)."""
        d = Path(run_dir)
        rd = RunDir(d)
        model, meta = load_checkpoint(d)
        names = tuple(meta["class_names"])
        try:
            metrics = json.loads(rd.metrics.read_text())
        except (OSError, json.JSONDecodeError, RecursionError) as e:
            raise FmnistError(f"{rd.metrics}: not readable ({e})") from None
        try:
            m = RunMetrics.from_dict(metrics, names)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise FmnistError(f"{rd.metrics}: not the metrics of a fmnist run ({type(e).__name__}: "
                              f"{str(e)[:80]})") from None
        history = History.from_csv(rd.history)
        if m.test is not None and rd.test_predictions.is_file():
            import dataclasses

            with np.load(rd.test_predictions, allow_pickle=False) as z:
                m = dataclasses.replace(m, test=dataclasses.replace(m.test, predictions=z["predicted"]))
        history.best_epoch, history.restored_best = m.best_epoch, m.restored_best
        history.stopped_early, history.interrupted = m.stopped_early, m.interrupted
        history.train_seconds, history.images_per_second = m.train_seconds, m.train_images_per_second
        return cls(model, TrainConfig.from_dict(meta["config"]), history, m, d, names,
                   Calibration.from_dict(meta.get("calibration")))


def check_data(data: object, caller: str, *kinds: type) -> None:
    """One clear line when a library caller passes something else than the data it expects (a Dataset)."""
    kinds = kinds or (Dataset,)
    if not isinstance(data, kinds):
        raise FmnistError(f"{caller}: data must be a {' or a '.join(k.__name__ for k in kinds)} (e.g. "
                          f"fmnist.load_dataset() or fmnist.Dataset(...)), got {type(data).__name__}")


def provenance() -> dict:
    """Library versions, machine and git revision, saved with every result."""
    return dict(_provenance())


@functools.cache
def _provenance() -> dict:  # once per process: it cannot change, and the git call is a subprocess
    import sklearn
    import torchvision

    rev = dirty = None
    try:
        here = Path(__file__).parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=here).stdout.strip() or None
        if rev is not None:  # changes to tracked files since that commit: the revision alone does not say the code
            dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                        text=True, timeout=5, cwd=here).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    from fmnist import __version__

    return {"fmnist": __version__, "git_revision": rev, "uncommitted_changes": dirty, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def default_run_dir(model: str) -> Path:
    """runs/<model>-<timestamp>/"""
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def evaluate(model: torch.nn.Module | Run | str | os.PathLike, data: Dataset | Split,
             class_names: tuple[str, ...] | None = None, tta: bool | str | None = None,
             out_dir: str | os.PathLike | None = None, split: str | None = None,
             calibration: Calibration | None = None, embedding: bool = False) -> Evaluation:
    """Accuracy, loss, per-class scores, confusion matrix, calibration error and prediction-set coverage of a model
    (or a Run, or a run directory) on a split (a Dataset's test split, or its train split when it has none).

    With out_dir, also writes the confusion matrix, the misclassified images with what drove each prediction, the
    reliability diagram, and with `embedding` the 2-D map of the model's features (t-SNE: the slowest picture).
    """
    if isinstance(model, str | os.PathLike):
        model = Run.load(model)
    if not isinstance(model, torch.nn.Module | Run):
        raise FmnistError(f"evaluate: model must be a Run, a run directory or a torch module, got "
                          f"{type(model).__name__}")
    check_data(data, "evaluate", Dataset, Split)
    if isinstance(model, Run):
        class_names = class_names or model.class_names
        tta = model.config.tta_views if tta is None else tta
        calibration = calibration or model.calibration
        model = model.model
    if isinstance(data, Dataset):
        split = split or ("test" if data.test is not None else "train")
        if class_names:
            check_classes(tuple(class_names), data)
        class_names = class_names or data.class_names
        data = data.test if data.test is not None else data.train
    if not class_names:
        raise FmnistError("class_names are needed to evaluate a bare model on a Split")
    ev, logits = _measure(model, data, class_names, tta, split or "test", calibration)
    if out_dir is not None:
        draw_evaluation(model, data, ev, logits, calibration, out_dir, embedding=embedding)
    return ev


def _measure(model: torch.nn.Module, data: Split, class_names: tuple[str, ...], tta: bool | str, split: str,
             calibration: Calibration | None) -> tuple[Evaluation, np.ndarray]:
    import dataclasses

    from fmnist import trust

    logits = numpy_logits(model, data.images, tta=tta)
    ev = classification_metrics(data.labels, logits, class_names, split=split)
    figures, sets = trust.measure(logits, data.labels, calibration)
    return dataclasses.replace(ev, calibration=figures, conformal=sets), logits


def draw_evaluation(model: torch.nn.Module, data: Split, ev: Evaluation, logits: np.ndarray,
                    calibration: Calibration | None, out_dir: str | os.PathLike, embedding: bool = False) -> None:
    """The pictures of an evaluation: confusion matrix, the most confident mistakes with what drove them, the
    reliability diagram and, with `embedding`, the 2-D map of the model's features (t-SNE: needs a few dozen
    images at least; skipped below that)."""
    from fmnist import explain, plots

    out, class_names = Path(out_dir), ev.class_names
    probs = calibration.probabilities(logits) if calibration else softmax(logits)
    plots.confusion_matrix(ev, path=out / CONFUSION)
    pred, conf = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(pred != data.labels)
    pick = wrong[np.argsort(-conf[wrong])][:16]  # the gallery's most confident mistakes, with their heatmaps
    try:  # the heatmaps need the explain extra; without it the gallery shows the mistakes alone
        heat = dict(zip(pick.tolist(), explain.saliency(model, data.images[pick], pred[pick]), strict=True)) \
            if len(pick) else {}
    except Unavailable:
        heat = {}
    plots.misclassified(data.images, data.labels, pred, conf, class_names, out / MISCLASSIFIED,
                        n=len(pick), heatmaps=heat)
    plots.reliability_diagram(logits, data.labels, calibration, out / RELIABILITY)
    if embedding and len(data) >= explain.MIN_EMBEDDING_IMAGES:
        with contextlib.suppress(Unavailable):  # the map needs the explain extra
            explain.embedding_map(model, data.images, data.labels, logits.argmax(1), class_names, out / EMBEDDING)


def augmentation_picture(images: np.ndarray, spec: str, path: Path, seed: int = 0,
                         erase_area: float = ERASE_AREA) -> Path:
    """A gallery of what `--augment spec` does to a few training images."""
    from fmnist import plots
    from fmnist.augment import augment_batch
    from fmnist.data import to_input

    g = torch.Generator().manual_seed(seed)
    x = to_input(images)
    aug = [augment_batch(x, augment_ops(spec), g, erase_area=erase_area)[:, 0].numpy() for _ in range(7)]
    plots.augmentation_gallery(x[:, 0].numpy(), aug, path, title=f"--augment {spec}")
    return path


def train(model: str, data: Dataset, out_dir: str | os.PathLike | None = None, *, preset: str | None = None,
          progress: bool | None = None, log: Any = print, existing: str = "refuse", **settings: Any) -> Run:
    """Train a model by name with its recipe (as `fmnist train MODEL`), a preset's settings or any TrainConfig
    setting given as a keyword; evaluate it once on the test split; save the run. Returns the Run."""
    if not isinstance(model, str):
        raise FmnistError(f"train: model must be a model or preset name (see fmnist.list_models()), got "
                          f"{type(model).__name__}")
    check_data(data, "train")
    config = TrainConfig.for_model(model, preset=preset, **settings)
    out = out_dir if out_dir is not None else default_run_dir(preset or model)  # as `fmnist train NAME` names it
    return train_run(config, data, out, progress=progress, log=log, existing=existing)


def train_within(time_budget: float | str, data: Dataset, out_dir: str | os.PathLike | None = None, *,
                 started: float | None = None, progress: bool | None = None, log: Any = print,
                 existing: str = "refuse", mlflow: str | None = None, **settings: Any) -> Run:
    """The most accurate model this machine can train in `time_budget` (as `fmnist train --time-budget T`):
    the recipe of the measured frontier (fmnist.recipes.BUDGET_FRONTIER) expected to be best on validation at
    the epochs that fit here, trained with its epochs planned to end inside the budget. `settings` (seed,
    device, ...) apply to every recipe weighed."""
    from fmnist.budget import choose_recipe
    from fmnist.recipes import BUDGET_FRONTIER

    started = time.perf_counter() if started is None else started
    check_data(data, "train_within")
    budget = parse_duration(time_budget)
    if "epochs" in settings:
        raise FmnistError("a time budget sets the epochs: give epochs or a time budget, not both")
    if existing == "resume":
        raise FmnistError("resuming a budgeted run needs its model: fmnist train MODEL --time-budget T --resume")
    sized = {r: fit_preset_to_data(TrainConfig.for_model(r, **settings), data, budgeted=True)
             for r in dict.fromkeys(p.recipe for p in BUDGET_FRONTIER)}
    choice = choose_recipe({r: c for r, (c, _) in sized.items()}, data, budget, started, log=log)
    for line in sized[choice.recipe][1]:
        log(line)
    out = out_dir if out_dir is not None else default_run_dir(choice.recipe)
    return train_run(choice.config, data, out, progress=progress, log=log, existing=existing, mlflow=mlflow,
                     time_budget=budget, started=started, plan=choice.plan)


PRESET_IMAGES = 60_000  # the training set the presets were made for
SMALL_DATA = 20_000  # below this a preset's epochs and held-out share are sized to the data


def fit_preset_to_data(config: TrainConfig, ds: Dataset, budgeted: bool = False) -> tuple[TrainConfig, list[str]]:
    """A preset's config sized to data unlike Fashion-MNIST's, and one line per change (none for Fashion-MNIST,
    or for a config that is not exactly a preset's: explicit settings are kept as given).

    - Mirrored images: flips (and the mirrored test-time view) assume classes that look alike mirrored, as
      clothing does; on other data (digits, letters) a mirrored 2 or b is another class, so they are dropped.
    - Small data: the held-out share grows to keep about 300 images for the calibration (at most 20%), and the
      epochs grow so the run takes about the optimizer steps it takes on 60,000 images (at most 20 times its
      epochs): a preset's few epochs are a handful of steps on a thousand images. `budgeted`: a time budget sets
      the epochs, so only the held-out share changes.
    """
    from fmnist.recipes import PRESETS

    keep = ("seed", "device", "precision", "channels_last")
    base = next((p for p in PRESETS if TrainConfig.for_model(p).replace(**{k: getattr(config, k) for k in keep})
                 == config), None)
    if base is None:
        return config, []
    notes, changes = [], {}
    if not ds.fashion:
        ops = [o for o in augment_ops(config.augment) if o not in ("flip", "altflip")]
        if ops != augment_ops(config.augment) or config.tta:
            changes.update(augment=",".join(ops), tta=False, tta_shifts=False)
            notes.append(f"preset {base}: no mirrored images (augmentation {','.join(ops) or 'none'}, no test-time "
                         "views): this data is not Fashion-MNIST, whose classes look alike mirrored")
    n = len(ds.train)
    if n < SMALL_DATA:
        val = min(0.2, max(config.val_fraction, 300 / n))
        scale = PRESET_IMAGES * (1 - config.val_fraction) / (n * (1 - val))
        epochs = min(round(config.epochs * scale), config.epochs * 20)
        changes.update(val_fraction=round(val, 4), **({} if budgeted else {"epochs": epochs}))
        if budgeted and val != config.val_fraction:
            notes.append(f"preset {base}: {n:,} training images, so {val:.0%} held out to calibrate instead of "
                         f"{config.val_fraction:.0%} (sized for {PRESET_IMAGES:,}); give --val-fraction to choose")
        elif not budgeted:
            notes.append(f"preset {base}: {n:,} training images, so {epochs} epochs instead of {config.epochs} and "
                         f"{val:.0%} held out to calibrate instead of {config.val_fraction:.0%} (sized for "
                         f"{PRESET_IMAGES:,}); give --epochs or --val-fraction to choose them")
    return config.replace(**changes), notes


def train_run(config: TrainConfig, ds: Dataset, out_dir: str | os.PathLike | None = None,
              progress: bool | None = None, log: Any = print, plots: bool = True, existing: str = "refuse",
              mlflow: str | None = None, nested: bool = False, time_budget: float | str | None = None,
              started: float | None = None, plan: Plan | None = None) -> Run:
    """Split, train, save and evaluate one model with a given config; returns the Run (metrics.json, etc.).

    time_budget: seconds (or "2m", "600s", ...) the whole call may take, counted from `started` (a
    time.perf_counter() value: the command's start) or from this call: the epochs are planned to fit
    (fmnist.budget.plan_epochs), config.epochs is ignored, and the plan and what it took are recorded in
    config.json and metrics.json. A resumed run keeps the plan its config.json recorded. plan: one already
    made for this config (train_within's), used as it is.

    mlflow: an MLflow tracking URI (or "" for $MLFLOW_TRACKING_URI / sqlite:///mlflow.db) to log the run to.

    existing: what to do when out_dir already holds a run: "refuse", "overwrite" (clear it first) or "resume"
    (continue from its last finished epoch, with the same config).
    """
    from fmnist.loop import TrainState, trainable_net
    from fmnist.models import create_model
    from fmnist.optim import check_optimizer

    started = time.perf_counter() if started is None else started
    if not isinstance(config, TrainConfig):
        raise FmnistError(f"train_run: config must be a TrainConfig, got {type(config).__name__}")
    check_data(ds, "train_run")
    budget = parse_duration(time_budget) if time_budget is not None else None
    if existing not in ("refuse", "overwrite", "resume"):
        raise FmnistError(f"existing must be refuse, overwrite or resume, got {existing!r}")
    config, sized = fit_preset_to_data(config, ds, budgeted=time_budget is not None)
    for line in sized:
        log(line)
    out = Path(out_dir) if out_dir else default_run_dir(config.model)
    # everything that can be refused is checked before the directory is touched
    from fmnist.inference import resolve_device

    resolve_device(config.device)
    tr_idx, va_idx = holdout_split(ds.train.labels, config.val_fraction, config.seed)
    train, val = ds.train.take(tr_idx), ds.train.take(va_idx)
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(ds.class_names), **config.model_params)
    check_optimizer(trainable_net(model, config), config)  # e.g. muon on a model without hidden weight matrices
    if budget is not None and plan is not None:
        config = config.replace(epochs=plan.epochs)
    elif budget is not None:
        config, plan = _budgeted(config, out, existing == "resume", model, train, val, ds.test, budget, started,
                                 log)
    # a missing state or one of other settings is refused here; fit continues from this very state
    state = TrainState.load(RunDir(out).train_state, config) if existing == "resume" else None
    from fmnist.tracking import track

    with track(mlflow, out.name, tags={"model": config.model, "run_dir": out.resolve(), **{
            f"version.{k}": v for k, v in provenance().items()}}, nested=nested) as tracker:
        prepare_out_dir(out, existing="keep" if existing == "resume" else existing,  # after the store opened
                        mark_run=True)
        run = _train_in(config, ds, out, model, train, val, progress, log, plots, state, tracker,
                        plan and (plan, started, existing == "resume"))
    return run


def _budgeted(config: TrainConfig, out: Path, resume: bool, model: torch.nn.Module, train: Split, val: Split,
              test: Split | None, budget: float, started: float, log: Any) -> tuple[TrainConfig, Plan]:
    """The config with the epochs that fit the budget, and the plan; a resumed run keeps its recorded plan."""
    if resume:
        try:
            saved = json.loads(RunDir(out).config.read_text())
            plan = Plan.from_dict(saved["time_budget"])
        except (OSError, ValueError, KeyError, TypeError):
            raise FmnistError(f"{out}: --resume with --time-budget needs a run started with a time budget; this "
                              "one has no plan in its config.json (resume it without --time-budget)") from None
        log(f"resuming with the plan of the run's time budget: {plan.epochs} epochs")
        return config.replace(epochs=plan.epochs), plan
    plan = plan_epochs(model, config, train, val, test, budget, started, log=log)
    return config.replace(epochs=plan.epochs), plan


def finished(run: Run) -> Run:
    """`run` when its training ran to the end; KeyboardInterrupt when Ctrl-C stopped it. For callers that go on to
    other work with the run (a study step, a search's retraining): an interrupted run is never recorded as done,
    and the interrupt stops the caller too (its rerun resumes)."""
    if run.metrics.interrupted:
        raise KeyboardInterrupt
    return run


def _train_in(config: TrainConfig, ds: Dataset, out: Path, model: torch.nn.Module, train: Split, val: Split,
              progress: bool | None, log: Any, plots: bool, state: Any, tracker: Any,
              budgeted: tuple[Plan, float, bool] | None = None) -> Run:
    from fmnist import plots as P
    from fmnist.models import count_parameters

    rd = RunDir(out)
    if tracker is not None:
        tracker.params(config.to_dict())
    n_params = count_parameters(model)
    write_json(rd.config, {**config.to_dict(), "data": {
        "source": ds.source, "cleaned": ds.cleaned, "train_rows": len(train), "val_rows": len(val),
        "test_rows": len(ds.test) if ds.test is not None else 0, "class_names": list(ds.class_names)},
        "parameters": n_params, "provenance": provenance(),
        **({"time_budget": budgeted[0].to_dict()} if budgeted else {})})
    log(f"{config.model}: {n_params:,} parameters; {len(train):,} train / {len(val):,} validation images; "
        f"writing to {out}")
    if plots and config.augment:
        augmentation_picture(train.images[:6], config.augment, rd.file(AUGMENTATION), config.seed,
                             config.erase_area)
    hist = fit(model, train, val, config, progress=progress, log=log, state_path=rd.train_state,
               resume=state or False, on_epoch=tracker.epoch if tracker is not None else None)
    val_accuracy = hist.kept_val_accuracy
    ood, calibration = _held_out_checks(model, config, train, val, log)
    save_checkpoint(model, rd.model, config, ds.class_names,
                    extra={"val_accuracy": val_accuracy, "ood": ood,
                           "calibration": calibration.to_dict() if calibration else None})
    hist.to_csv(rd.history)
    if plots and hist.epoch:
        P.learning_curves(hist, rd.file(LEARNING_CURVES), title=config.model)
    test = logits = None
    if ds.test is not None:
        t_eval = time.perf_counter()
        test, logits = _measure(model, ds.test, ds.class_names, config.tta_views, "test", calibration)
        log(f"test accuracy {test.accuracy:.4f}  loss {test.loss:.4f}  (train {hist.train_seconds:.0f}s, "
            f"{hist.images_per_second:,.0f} images/s; evaluated in {time.perf_counter() - t_eval:.0f}s)")
        log(describe_trust(test))
    metrics = RunMetrics(model=config.model, parameters=n_params, train_seconds=hist.train_seconds,
                         train_images_per_second=hist.images_per_second, epochs_run=len(hist.epoch),
                         best_epoch=hist.best_epoch, restored_best=hist.restored_best,
                         stopped_early=hist.stopped_early, interrupted=hist.interrupted, val_accuracy=val_accuracy,
                         test=test)
    extra = {}
    if test is not None:  # kept so that runs can be compared image by image without retraining (fmnist compare)
        with atomic_path(rd.test_predictions) as tmp:
            np.savez(tmp, predicted=test.predictions, labels=ds.test.labels.astype(np.int16))
        extra = {"test_set": ds.test.fingerprint()}
    saved = {**metrics.to_dict(), **extra, "provenance": provenance()}
    write_json(rd.metrics, saved)
    if plots and test is not None:  # after the results are on disk: a picture that fails loses no result
        t_draw = time.perf_counter()
        draw_evaluation(model, ds.test, test, logits, calibration, out)
        log(f"pictures drawn in {time.perf_counter() - t_draw:.0f}s")
    if budgeted:  # what the plan said against what it took, pictures included
        plan, started, resumed = budgeted
        actual = None if resumed else time.perf_counter() - started
        write_json(rd.metrics, {**saved, "time_budget": {  # again: the time includes the pictures
            **plan.to_dict(), "actual_seconds": actual, "resumed": resumed,
            "within_budget": None if actual is None else actual <= plan.budget_seconds}})
        log(format_outcome(plan, actual) if actual is not None else
            "time budget: this run was resumed, so its time is not compared with the plan")
    if not hist.interrupted:
        rd.train_state.unlink(missing_ok=True)  # complete: the run's files say everything
    if tracker is not None:
        tracker.metrics({"test_accuracy": metrics.test_accuracy, "test_loss": metrics.test_loss,
                         "kept_val_accuracy": metrics.val_accuracy, "train_seconds": metrics.train_seconds,
                         "parameters": metrics.parameters})
        tracker.artifacts(out)
    return Run(model, config, hist, metrics, out, ds.class_names, calibration)


def _held_out_checks(model: torch.nn.Module, config: TrainConfig, train: Split, val: Split,
                     log: Any) -> tuple[dict, Calibration | None]:
    """The unusual-picture threshold and the calibration (temperature, prediction sets), both from held-out images.

    A run without a validation split has no held-out images: its threshold comes from training images, and says
    so (seen in training, they make it stricter: more false alarms, never fewer); it gets no calibration, since a
    temperature fitted on training images would make the model more confident, not less.
    """
    if not len(val):
        n = min(5000, len(train))
        logits = numpy_logits(model, train.images[:n], tta=config.tta_views)
        log("no validation split: probabilities are not calibrated and predictions come without prediction sets")
        return calibrate_ood(logits, f"training images ({n:,}; the run had no validation split)"), None
    logits = numpy_logits(model, val.images, tta=config.tta_views)
    where = f"validation split ({len(val):,} images)"
    ood = calibrate_ood(logits, where)
    if len(val) < MIN_CALIBRATION:
        log(f"{len(val)} validation images are too few to calibrate probabilities (at least {MIN_CALIBRATION})")
        return ood, None
    cal = Calibration.fit(logits, val.labels, where, seed=config.seed)
    if cal.n < FEW_CALIBRATION:  # said, not hidden: the sets' coverage is only as exact as the images behind it
        spread = 1.96 * math.sqrt(cal.level * (1 - cal.level) / max(1, cal.n // 2))
        log(f"note: calibrated on {cal.n} held-out images only: the {cal.level:.0%} prediction sets will hold the "
            f"true class for about {cal.level:.0%} ± {spread:.0%} of new images (more held-out images narrow this: "
            "--val-fraction)")
    return ood, cal


def describe_trust(ev: Evaluation) -> str:
    """One line: calibration error before and after the temperature, and the prediction sets' coverage."""
    c, s = ev.calibration, ev.conformal
    if c is None or c.temperature is None or s is None:
        return (f"calibration: ECE {c.ece if c else float('nan'):.4f}; no temperature stored with the model (trained "
                "without held-out images, or by an older fmnist: `fmnist calibrate RUN` fits one)")
    return (f"calibration: ECE {c.ece:.4f} -> {c.ece_calibrated:.4f} with temperature {c.temperature:.3f}; "
            f"{s.level:.0%} prediction sets hold the true class for {s.coverage:.2%} of {ev.split} images, "
            f"{s.mean_set_size:.2f} classes on average")


def calibrate_run(run_dir: str | os.PathLike, ds: Dataset, level: float = 0.9, log: Any = print) -> Calibration:
    """Fit a run's calibration again on its own validation split (rebuilt from its seed and val_fraction): to choose
    another prediction-set level, or to calibrate a run saved before fmnist stored calibrations. Rewrites the
    checkpoint's calibration and, when the data has a test split, metrics.json's calibration and conformal entries.
    """
    from fmnist import trust

    trust.check_level(level)
    d = Path(run_dir)
    rd = RunDir(d)
    model, meta = load_checkpoint(d)
    config = TrainConfig.from_dict(meta["config"])
    if config.val_fraction == 0:
        raise FmnistError(f"{d}: the run was trained without a validation split; calibrating on images it trained "
                          "on would make it more confident, not less (train with --val-fraction above 0)")
    _, va_idx = holdout_split(ds.train.labels, config.val_fraction, config.seed)
    try:
        data = json.loads(rd.config.read_text())["data"]
    except (OSError, ValueError, KeyError):
        data = None
    if data is None or data.get("val_rows") != len(va_idx) or data.get("source") != ds.source:
        raise FmnistError(f"{d}: give the data the run was trained on (with the same --limit): its validation "
                          f"split cannot be rebuilt from {ds.source} ({len(va_idx):,} validation rows)")
    val = ds.train.take(va_idx)
    logits = numpy_logits(model, val.images, tta=config.tta_views)
    cal = Calibration.fit(logits, val.labels, f"validation split ({len(val):,} images)", level=level, seed=config.seed)
    extra = {k: v for k, v in meta.items() if k not in ("format", "model", "model_params", "class_names",
                                                         "normalize", "config")}
    save_checkpoint(model, rd.model, config, tuple(meta["class_names"]),
                    extra={**extra, "calibration": cal.to_dict()})
    if ds.test is not None and rd.metrics.is_file():
        m = json.loads(rd.metrics.read_text())
        figures, sets = trust.measure(numpy_logits(model, ds.test.images, tta=config.tta_views), ds.test.labels, cal)
        m.update(calibration=figures, conformal=sets)
        write_json(rd.metrics, m)
    return cal


def check_classes(model_classes: tuple[str, ...], ds: Dataset, where: str = "the model") -> None:
    """Refuse data whose classes are not the model's (other names, another order or another count): its labels
    would be scored against classes they do not mean."""
    if tuple(model_classes) == tuple(ds.class_names):
        return

    def names(c: tuple[str, ...]) -> str:
        return ", ".join(c[:4]) + (", ..." if len(c) > 4 else "")

    raise FmnistError(f"{where} knows {len(model_classes)} classes ({names(model_classes)}) but "
                      f"{ds.source or 'the data'} has {len(ds.class_names)} ({names(ds.class_names)}): give data of "
                      "the model's classes (--data, with the classes.txt it was trained with)")


def evaluate_run(run_dir: str | os.PathLike, ds: Dataset, out_dir: str | os.PathLike | None = None,
                 tta: bool | str | None = None, embedding: bool = True) -> Evaluation:
    """Evaluate a saved run on a dataset's test split (or its train split when it has no test split); writes
    metrics.json and the pictures (the embedding map too, unless embedding=False) to out_dir (default
    RUN_DIR/evaluation)."""
    model, meta = load_checkpoint(run_dir)  # the checkpoint is all it needs (not the run's other files)
    check_classes(tuple(meta["class_names"]), ds, str(run_dir))
    out = prepare_out_dir(Path(out_dir) if out_dir else Path(run_dir) / "evaluation", existing="keep")
    if tta is None:
        tta = tta_views_of(meta.get("config", {}))
    ev = evaluate(model, ds, tuple(meta["class_names"]), tta=tta, out_dir=out,
                  calibration=Calibration.from_dict(meta.get("calibration")), embedding=embedding)
    write_json(out / METRICS, {"model": meta["model"], "data": ds.source, **ev.to_dict(),
                                      "provenance": provenance()})
    return ev


def format_evaluation(m: Evaluation) -> str:
    """An evaluation as `fmnist evaluate` prints it: accuracy, loss, macro F1, per-class scores, the most confused
    pairs and the calibration line."""
    lines = [f"({m.split}, {m.n:,} images): accuracy {m.accuracy:.4f}, loss {m.loss:.4f}, macro F1 {m.macro_f1:.4f}",
             f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for name, v in m.per_class.items():
        lines.append(f"{name:<14}{v['precision']:>10.4f}{v['recall']:>10.4f}{v['f1']:>10.4f}{v['support']:>9}")
    lines.append("most confused: " + "; ".join(f"{p['true']} -> {p['predicted']} ({p['count']})"
                                               for p in m.most_confused))
    lines.append(describe_trust(m))
    return "\n".join(lines)
