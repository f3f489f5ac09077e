"""Commands that train or measure models: train, study, tune, cv, labels, evaluate, calibrate."""

from __future__ import annotations

import argparse

from fmnist.cli import (
    add_data_args,
    add_mlflow_arg,
    add_run_args,
    add_train_args,
    check_mlflow,
    given_settings,
    load,
    progress,
    quiet_optuna,
    train_config_from_args,
)
from fmnist.errors import FmnistError, printable


def cmd_train(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()  # a time budget counts from here: importing, loading the data, measuring
    from fmnist.budget import parse_duration
    from fmnist.run import default_run_dir, train_run, train_within

    budget = parse_duration(args.time_budget) if args.time_budget is not None else None
    if budget is not None and args.epochs is not None:
        raise FmnistError("--time-budget sets the epochs: give --epochs or --time-budget, not both")
    if args.model is None and budget is None:
        raise FmnistError("give MODEL (a model or preset: see `fmnist models`), or --time-budget T for the most "
                          "accurate recipe that fits T here")
    if args.model is None and (args.set or args.preset or args.no_recipe):
        raise FmnistError("--set, --preset and --no-recipe need MODEL: without one, --time-budget chooses the recipe")
    config = train_config_from_args(args.model, args) if args.model is not None else None
    if args.resume and args.overwrite:
        raise FmnistError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if args.resume and not args.out:
        raise FmnistError("--resume needs --out DIR: the run directory to continue")
    check_mlflow(args)
    ds = load(args)
    existing = "resume" if args.resume else "overwrite" if args.overwrite else "refuse"
    if config is None:
        run = train_within(budget, ds, args.out, started=started, progress=progress(args), existing=existing,
                           mlflow=args.mlflow, **given_settings(args))
    else:
        run = train_run(config, ds, args.out or default_run_dir(args.preset or args.model), progress=progress(args),
                        existing=existing, mlflow=args.mlflow, time_budget=budget, started=started)
    print(f"saved {run.dir} (model.safetensors, metrics.json, history.csv, config.json, pictures)")
    return 130 if run.metrics.interrupted else 0


def cmd_study(args: argparse.Namespace) -> int:
    from fmnist.study import format_study, run_study

    out = args.out or f"runs/study-{args.profile}"
    check_mlflow(args)
    quiet_optuna()
    result = run_study(args.profile, out, args.data, args.test_data, progress=progress(args), mlflow=args.mlflow)
    print(format_study(result, out))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from fmnist.tuning import format_tune, load_space, tune

    space = load_space(args.space)
    model = args.model or space.get("model")
    if not model:
        raise FmnistError(f"search space '{args.space}' names no model: give MODEL")
    config = train_config_from_args(model, args)
    check_mlflow(args)
    quiet_optuna()
    ds = load(args)
    out = args.out or f"runs/tune-{config.model}"
    r = tune(config, ds, space, out, sampler=args.sampler, trials=args.trials, timeout=args.timeout,
             storage=args.storage, study_name=args.study_name, metric=args.metric, retrain=not args.no_retrain,
             progress=progress(args), heartbeat=args.heartbeat, mlflow=args.mlflow)
    print(format_tune(r, out))
    return 0 if r.complete else 130


def cmd_cv(args: argparse.Namespace) -> int:
    from fmnist.cv import cross_validate, format_cv

    config = train_config_from_args(args.model, args)
    check_mlflow(args)
    quiet_optuna()
    ds = load(args)
    out = args.out or f"runs/cv-{args.model}"
    summary = cross_validate(config, ds, args.folds, out, repeats=args.repeats, storage=args.storage,
                             study_name=args.study_name, heartbeat=args.heartbeat, timeout=args.timeout,
                             progress=progress(args), mlflow=args.mlflow)
    print(format_cv(summary))
    if not summary.complete:
        return 130
    print(f"wrote {out}/cv.json, fold_curves.png, fold_metrics.png")
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from fmnist.labels import find_label_issues, format_issues

    config = train_config_from_args(args.model, args)
    if args.folds < 2:
        raise FmnistError(f"--folds must be at least 2, got {args.folds}")
    quiet_optuna()
    ds = load(args)
    out = args.out or "runs/labels"
    result = find_label_issues(config, ds, out, folds=args.folds, retrain=args.retrain, storage=args.storage,
                               progress=progress(args), study_name=args.study_name,
                               heartbeat=args.heartbeat, timeout=args.timeout)
    print(format_issues(result))
    print(f"wrote {out}/label_issues.csv, suspects.png and summary.json")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fmnist.run import evaluate_run, format_evaluation
    from fmnist.rundir import EMBEDDING

    ds = load(args)
    m = evaluate_run(args.run_dir, ds, args.out, embedding=not args.no_embedding)
    out = Path(args.out or f"{args.run_dir}/evaluation")
    print(f"{printable(args.run_dir)} on {printable(ds.source)} " + format_evaluation(m))
    print(f"wrote {out}: metrics.json, confusion_matrix.png, misclassified.png (with heatmaps), reliability.png"
          + (", embedding.png" if (out / EMBEDDING).exists() and not args.no_embedding else
             "" if args.no_embedding else f" (no embedding map: {m.n} images are too few)"))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fmnist.run import calibrate_run
    from fmnist.trust import check_level

    check_level(args.level)
    ds = load(args)
    cal = calibrate_run(args.run_dir, ds, level=args.level)
    print(f"{args.run_dir}: temperature {cal.temperature:.3f}; {cal.level:.0%} prediction sets keep classes with "
          f"calibrated probability >= {1 - cal.threshold:.4f} (fitted on the {cal.fitted_on})")
    return 0


def add_storage_args(p: argparse.ArgumentParser, name_help: str) -> None:
    g = p.add_argument_group("shared study (scale out: run the same command on several machines)")
    g.add_argument("--storage", metavar="URL",
                   help="Optuna storage, e.g. postgresql://user:pass@host/db (default: SQLite in --out)")
    g.add_argument("--study-name", metavar="NAME", help=name_help)
    g.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    g.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                   help="a trial whose worker is silent for 3 heartbeats is failed and re-queued (default 10)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """train, study, tune, cv, labels, evaluate, calibrate."""
    p = sub.add_parser("train", help="train a model, evaluate it on the test set, save the run",
                       description="Train MODEL (see `fmnist models`) on a stratified holdout of the training "
                                   "data, validate each epoch, evaluate once on the test set and write a run "
                                   "directory. Defaults are the model's recipe (from its reference "
                                   "project, see `fmnist models`).")
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help="a model (`fmnist models`) or a preset: fast, best, max; without one, --time-budget "
                        "chooses the recipe")
    p.add_argument("--time-budget", metavar="T",
                   help="end inside T (e.g. 90s, 2m, 1h), evaluation and calibration included: a few timed steps "
                        "on this machine set the epochs so the whole schedule fits; without MODEL, the recipe "
                        "of the measured accuracy/compute frontier expected to be most accurate in T here")
    add_run_args(p, "run directory (default runs/MODEL-TIMESTAMP); an existing run is refused unless "
                    "--overwrite or --resume")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (fmnist's own files there are deleted first)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted or killed run in --out from its last finished epoch (give the "
                        "same options as when it started)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("study", help="the main job: every technique of the reference projects, one report",
                       description="Data audit, then the reference projects' recipes for their models, "
                                   "augmentation, tuning, "
                                   "k-fold cross-validation, transfer learning and fmnist's residual net; writes "
                                   "report.html (self-contained) and results.json. Rerun with the same --out "
                                   "to resume after an interruption.")
    p.add_argument("--profile", choices=("tiny", "quick", "full"), default="quick",
                   help="quick: every technique with a converging recipe; full: the reference projects' own "
                        "settings (50 epochs, 5 folds, 20 trials), hours; tiny: a smoke test on a slice of the "
                        "data, whose figures say nothing")
    p.add_argument("--data", metavar="PATH", help="as for `fmnist data`")
    p.add_argument("--test-data", metavar="PATH", help="test split, when --data names a train file only")
    p.add_argument("--out", metavar="DIR", help="default runs/study-PROFILE")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_mlflow_arg(p, "also log every step to MLflow, nested under one study run (see `fmnist train --help`)")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("tune", help="hyperparameter search (grid, random, TPE) on Optuna",
                       description="Search hyperparameters on the validation split (never the test set) with "
                                   "median pruning; the study lives in an Optuna storage (SQLite in --out by "
                                   "default) so a stopped search resumes and several processes can share it. "
                                   "The best configuration is retrained and tested once.")
    p.add_argument("model", metavar="MODEL", nargs="?", help="default: the space's model")
    p.add_argument("--space", default="lr-wd",
                   help="a named space (reference000: reference project 000's grid; reference001: reference "
                        "project 001's random search; lr-wd) or a TOML file")
    p.add_argument("--sampler", choices=("grid", "random", "tpe"), default="tpe",
                   help="grid: every combination; random; tpe (default): Optuna's Bayesian sampler")
    p.add_argument("--trials", type=int, metavar="N", help="finished trials wanted in the study (default: grid "
                                                           "size or 20)")
    add_storage_args(p, "default tune-MODEL")
    # val_acc: the previous release's name, for one release
    p.add_argument("--metric", choices=("val_accuracy", "val_loss", "val_acc"), default="val_accuracy",
                   help="what the search maximizes (val_accuracy) or minimizes (val_loss), on the validation split")
    p.add_argument("--no-retrain", action="store_true",
                   help="skip retraining and testing the best configuration (extra workers of a shared study)")
    add_run_args(p, "output directory (default runs/tune-MODEL)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("cv", help="stratified k-fold cross-validation",
                       description="Train MODEL once per fold of a stratified k-fold split of the training data; "
                                   "per-fold curves, validation and test accuracy, mean and std. Each fold is a "
                                   "trial of an Optuna study (SQLite in --out, or --storage): rerunning resumes, "
                                   "and several workers given the same --storage share the folds.")
    p.add_argument("model", metavar="MODEL", help="a model or preset (`fmnist models`)")
    p.add_argument("--folds", type=int, default=5, metavar="N", help="number of folds (default 5)")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="repeated k-fold: redraw the folds with seed+1, seed+2, ... (default 1)")
    add_storage_args(p, "default cv-MODEL-<hash of the settings>")
    add_run_args(p, "output directory (default runs/cv-MODEL)")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("labels", help="find likely label errors in the training and test data (cleanlab)",
                       description="Out-of-fold probabilities of every training row (k-fold cross-validation, as "
                                   "`fmnist cv`: resumable, shareable with --storage) and test probabilities from a "
                                   "model trained on the training split, then confident learning (cleanlab) finds "
                                   "the labels that look wrong. Writes OUT/label_issues.csv (split, index, given, "
                                   "suggested, score; most likely first), suspects.png and summary.json.")
    p.add_argument("model", metavar="MODEL", nargs="?", default="fast", help="a model or preset (default fast)")
    p.add_argument("--folds", type=int, default=5, metavar="N", help="number of folds (default 5)")
    p.add_argument("--retrain", action="store_true",
                   help="also train without the training suspects and compare test accuracy with the all-rows model")
    add_storage_args(p, "default cv-MODEL-<hash of the settings>")
    add_data_args(p)
    add_train_args(p)
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/labels)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("evaluate", help="evaluate a saved run on a dataset",
                       description="Accuracy, loss, per-class precision/recall/F1, confusion matrix, "
                                   "misclassified examples with heatmaps of what drove them, calibration (ECE and "
                                   "a reliability diagram, before and after the run's temperature), prediction-set "
                                   "coverage, and a 2-D map of the model's features, on a dataset's test split.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    add_data_args(p)
    p.add_argument("--out", metavar="DIR", help="where to write (default RUN_DIR/evaluation)")
    p.add_argument("--no-embedding", action="store_true",
                   help="skip the embedding map (a t-SNE of the model's features: the slowest picture)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("calibrate", help="refit a run's calibration (another set level)",
                       description="Refit the temperature and the conformal prediction-set threshold on the run's "
                                   "own validation split (rebuilt from its seed; give the data it was trained on): "
                                   "to choose another set level, or to calibrate a run saved by an older fmnist.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--level", type=float, default=0.9, metavar="X",
                   help="prediction sets hold the true class with this probability (default 0.9)")
    add_data_args(p)
    p.set_defaults(func=cmd_calibrate)

