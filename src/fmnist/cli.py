"""The `fmnist` command: argument parsing only; the work is done by the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fmnist.errors import FmnistError, printable

if TYPE_CHECKING:
    from fmnist.config import TrainConfig


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

    ds = load_dataset(args.data, args.test_data, clean=not args.no_clean, limit=args.limit,
                      test_limit=args.test_limit)
    for line in ds.changes():  # every command says what makes the data used differ from the files
        print(f"data: {line}", file=sys.stderr)
    return ds


def cmd_data(args: argparse.Namespace) -> int:
    from fmnist.data.report import describe_data, format_summary

    ds = _load(args)
    report = describe_data(ds, args.out, plots=not args.no_plots)
    print(format_summary(report))
    if args.out:
        print(f"wrote {args.out}/data_report.json" + (f" and {len(report['pictures'])} pictures"
                                                       if report.get("pictures") else ""))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from fmnist.models import count_parameters, create_model, list_models, model_info

    names = list_models()
    if not names:
        print("no models registered")
        return 0
    print(f"{'name':<24}{'family':<12}{'params':>12}  description")
    for name in names:
        info = model_info(name)
        n = count_parameters(create_model(name, **({"weights": "none"} if info.pretrained else {})))
        print(f"{name:<24}{info.family:<12}{n:>12,}  {info.description}")
    return 0


def _parse_value(text: str) -> object:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a string


def _parse_sets(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise FmnistError(f"--set {item!r}: expected key=value, e.g. --set activation=tanh")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (type, choices and help from the dataclass), plus --set/--preset."""
    from dataclasses import fields

    from fmnist.config import TrainConfig

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
                   help="start from a named recipe instead of the model's: fast (94%% in 2 min), best (95%% in "
                        "10 min), max (95.4%% in 30 min) on a 2-core CPU; `fmnist train best` also picks the "
                        "preset's model")


def train_config_from_args(model: str, args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a command line: TrainConfig.for_model with the flags that were given."""
    from dataclasses import fields

    from fmnist.config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.name not in ("model", "model_params") and getattr(args, f.name, None) is not None}
    return TrainConfig.for_model(model, preset=getattr(args, "preset", None), recipe=not args.no_recipe,
                                 model_params=_parse_sets(args.set), **given)


def _check_mlflow(args: argparse.Namespace) -> None:
    if getattr(args, "mlflow", None) is not None:
        from fmnist.errors import require_extra

        require_extra("mlflow", "mlflow")


def cmd_train(args: argparse.Namespace) -> int:
    from fmnist.run import default_run_dir, train_run

    config = train_config_from_args(args.model, args)
    if args.resume and args.overwrite:
        raise FmnistError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if args.resume and not args.out:
        raise FmnistError("--resume needs --out DIR: the run directory to continue")
    _check_mlflow(args)
    ds = _load(args)
    out = args.out or default_run_dir(args.preset or args.model)
    run = train_run(config, ds, out, progress=False if args.quiet else None,
                    existing="resume" if args.resume else "overwrite" if args.overwrite else "refuse",
                    mlflow=args.mlflow)
    print(f"saved {out} (model.safetensors, metrics.json, history.csv, config.json, pictures)")
    return 130 if run.metrics.interrupted else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fmnist.run import evaluate_run

    ds = _load(args)
    m = evaluate_run(args.run_dir, ds, args.out, embedding=not args.no_embedding)
    print(f"{args.run_dir} on {ds.source} ({m.split}, {m.n:,} images): accuracy {m.accuracy:.4f}, "
          f"loss {m.loss:.4f}, macro F1 {m.macro_f1:.4f}")
    print(f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for name, v in m.per_class.items():
        print(f"{name:<14}{v['precision']:>10.4f}{v['recall']:>10.4f}{v['f1']:>10.4f}{v['support']:>9}")
    print("most confused: " + "; ".join(f"{p['true']} -> {p['predicted']} ({p['count']})"
                                        for p in m.most_confused))
    from fmnist.run import describe_trust

    print(describe_trust(m))
    from pathlib import Path

    out = Path(args.out or f"{args.run_dir}/evaluation")
    print(f"wrote {out}: metrics.json, confusion_matrix.png, misclassified.png (with heatmaps), reliability.png"
          + (", embedding.png" if (out / "embedding.png").exists() and not args.no_embedding else
             "" if args.no_embedding else f" (no embedding map: {m.n} images are too few)"))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from fmnist.files import dumps
    from fmnist.predict import Predictor, describe_set, load_inputs

    predictor = Predictor(args.run_dir, backend=args.backend)
    if predictor.onnx is not None and predictor.onnx.warning:
        print(f"warning: {predictor.onnx.warning}", file=sys.stderr)
    results, failed = [], 0
    for f in args.files:
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


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fmnist.run import calibrate_run

    if not 0 < args.level < 1:
        raise FmnistError(f"--level must be between 0 and 1 (e.g. 0.9), got {args.level}")
    ds = _load(args)
    cal = calibrate_run(args.run_dir, ds, level=args.level)
    print(f"{args.run_dir}: temperature {cal.temperature:.3f}; {cal.level:.0%} prediction sets keep classes with "
          f"calibrated probability >= {1 - cal.threshold:.4f} (fitted on the {cal.fitted_on})")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from fmnist.explain import explain_files
    from fmnist.files import prepare_out_dir
    from fmnist.predict import Predictor, load_inputs

    predictor = Predictor(args.run_dir)
    images, names, notes = [], [], []
    for f in args.files:  # every input is read (and refused) before anything is written
        x, n = load_inputs(f, invert=args.invert, notes=notes, preprocess=args.preprocess)
        images.append(x)
        names += n
    out = prepare_out_dir(args.out or f"{args.run_dir}/explain", existing="keep")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    import numpy as np

    x = np.concatenate(images)
    probs = predictor.predict_proba(x)
    sets = predictor.calibration.sets(probs) if predictor.calibration else None
    paths = explain_files(predictor.model, x, names, predictor.class_names, probs, out, method=args.method,
                          sets=sets, level=predictor.calibration.level if predictor.calibration else None)
    for name, p, path in zip(names, probs, paths, strict=True):
        print(f"{printable(name)}: {predictor.class_names[int(p.argmax())]} {p.max():.1%} -> {printable(path)}")
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from fmnist.labels import find_label_issues, format_issues

    config = train_config_from_args(args.model, args)
    if args.folds < 2:
        raise FmnistError(f"--folds must be at least 2, got {args.folds}")
    ds = _load(args)
    out = args.out or "runs/labels"
    result = find_label_issues(config, ds, out, folds=args.folds, retrain=args.retrain, storage=args.storage,
                               progress=False if args.quiet else None, study_name=args.study_name,
                               heartbeat=args.heartbeat, timeout=args.timeout)
    print(format_issues(result))
    print(f"wrote {out}/label_issues.csv, suspects.png and summary.json")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from fmnist.cv import cross_validate, format_cv

    config = train_config_from_args(args.model, args)
    _check_mlflow(args)
    ds = _load(args)
    out = args.out or f"runs/cv-{args.model}"
    summary = cross_validate(config, ds, args.folds, out, repeats=args.repeats, storage=args.storage,
                             study_name=args.study_name, heartbeat=args.heartbeat, timeout=args.timeout,
                             progress=False if args.quiet else None, mlflow=args.mlflow)
    print(format_cv(summary))
    if not summary.complete:
        return 130
    print(f"wrote {out}/cv.json, fold_curves.png, fold_metrics.png")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from fmnist.tuning import load_space, tune

    space = load_space(args.space)
    model = args.model or space.get("model")
    if not model:
        raise FmnistError(f"search space '{args.space}' names no model: give MODEL")
    config = train_config_from_args(model, args)
    _check_mlflow(args)
    ds = _load(args)
    out = args.out or f"runs/tune-{config.model}"
    r = tune(config, ds, space, out, sampler=args.sampler, trials=args.trials, timeout=args.timeout,
             storage=args.storage, study_name=args.study_name, metric=args.metric, retrain=not args.no_retrain,
             progress=False if args.quiet else None, heartbeat=args.heartbeat, mlflow=args.mlflow)
    print(f"best {r.metric} {r.best_value:.4f} with {r.best_params} "
          f"({r.n_complete} complete, {r.n_pruned} pruned of {r.target_trials}; this worker ran {r.ran_here})")
    if r.best_run is not None and r.best_run.test_accuracy is not None:
        print(f"best configuration retrained: test accuracy {r.best_run.test_accuracy:.4f}")
    print(f"wrote {out}/tune.json, trials.csv and plots")
    return 0 if r.complete else 130


def cmd_study(args: argparse.Namespace) -> int:
    from fmnist.study import run_study

    out = args.out or f"runs/study-{args.profile}"
    _check_mlflow(args)
    result = run_study(args.profile, out, args.data, args.test_data, progress=False if args.quiet else None,
                       mlflow=args.mlflow)
    print(f"{'technique':<34}{'model':<24}{'test acc':>9}{'95% interval':>17}{'reference':>11}  verdict")
    for r in result.rows:
        ref = f"{r.seed_figure:.2%}" if r.seed_figure is not None else "—"
        ci = f"{r.ci95[0]:.2%}-{r.ci95[1]:.2%}"
        print(f"{r.technique[:33]:<34}{r.model:<24}{r.test_accuracy:>9.2%}{ci:>17}{ref:>11}  {r.verdict}")
    print(f"study finished in {result.seconds / 60:.1f} min: {out}/report.html, {out}/results.json")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from fmnist.compare import find_runs, format_runs
    from fmnist.files import dumps

    runs = find_runs(args.dirs or ["runs"])
    key = {"test": "test_accuracy", "val": "val_accuracy", "time": "train_seconds", "date": "date",
           "model": "model"}[args.sort]
    runs.sort(key=lambda r: (getattr(r, key) is None, getattr(r, key) or 0), reverse=args.sort not in ("model",))
    print(dumps([r.__dict__ for r in runs]), end="") if args.json else print(format_runs(runs))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fmnist.compare import compare_runs

    out = args.out or "runs/compare"
    r = compare_runs(args.runs, out)
    for run in r["runs"]:
        print(f"{run['dir']}: {run['model']}, test accuracy {run['test_accuracy']:.2%}")
    if r["config_differences"]:
        print("settings that differ: " + "; ".join(f"{k} {v}" for k, v in r["config_differences"].items()))
    for p in r["pairs"]:
        lo, hi = p["ci95"]
        verdict = "a difference beyond noise" if p["p_value"] < 0.05 else "no difference beyond noise"
        print(f"{p['a']} - {p['b']}: {100 * p['accuracy_difference']:+.2f} points [{100 * lo:+.2f}, {100 * hi:+.2f}], "
              f"McNemar p = {p['p_value']:.3g} ({p['only_a']} vs {p['only_b']} images right in one only): {verdict}")
    print(f"wrote {out}/compare.json and compare.png")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fmnist.export import agreement, export

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
    if args.calibration_images < 1:
        raise FmnistError(f"--calibration-images must be at least 1, got {args.calibration_images}")
    ds = _load(args) if args.quantize or (args.format == "onnx" and args.check and args.out is None) else None
    path = export(args.run_dir, args.format, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if ds is not None and args.check:
        split = ds.test if ds.test is not None else ds.train
        a = agreement(args.run_dir, split.images[:args.check])
        print(f"onnxruntime vs PyTorch on {a['n']:,} images: same prediction {a['same_prediction']:.4%}, "
              f"max |logit difference| {a['max_abs_logit_diff']:.2e}")
    if args.quantize:
        from fmnist.config import tta_views_of
        from fmnist.export import compare_int8, int8_weight_bits, quantize_int8
        from fmnist.files import write_json
        from fmnist.inference import load_checkpoint

        bits = int8_weight_bits(None if args.weight_bits == "auto" else int(args.weight_bits))
        q = quantize_int8(args.run_dir, ds.train.images[:args.calibration_images], weight_bits=bits)
        n_cal = min(args.calibration_images, len(ds.train))
        why = ""
        if args.weight_bits == "auto":
            why = ", as this CPU has no VNNI (8-bit products would saturate)" if bits == 7 else ", as this CPU has VNNI"
        print(f"wrote {q} ({q.stat().st_size / 1e6:.1f} MB): activation ranges from {n_cal:,} training images, "
              f"{bits}-bit weights{why}; `--backend onnx` now uses it")
        split = ds.test if ds.test is not None else ds.train
        tta = tta_views_of(load_checkpoint(args.run_dir)[1].get("config", {}))
        r = compare_int8(args.run_dir, split.images, split.labels, tta=tta)
        r["weight_bits"] = bits
        write_json(q.parent / "int8.json", r)
        f, i = r["fp32"], r["int8"]
        print(f"{'':<6}{'accuracy':>10}{'batch-1 latency':>17}{'batch-1024':>16}{'size':>9}")
        for name, v in (("fp32", f), ("int8", i)):
            print(f"{name:<6}{v['accuracy']:>10.2%}{v['latency_ms_batch1']:>14.3f} ms{v['images_per_second']:>10,.0f} "
                  f"img/s{v['megabytes']:>6.1f} MB")
        verdict = "within" if r["accuracy_drop_points"] <= 0.3 else "OVER"
        print(f"int8 on {r['n']:,} {'test' if ds.test is not None else 'training'} images: accuracy "
              f"{-r['accuracy_drop_points']:+.2f} points ({verdict} the 0.3-point budget), batch-1 latency "
              f"x{r['latency_speedup']:.2f}, throughput x{r['throughput_speedup']:.2f} (wrote int8.json)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import socket

    from fmnist.errors import require_extra

    require_extra("serve", "fastapi", "uvicorn", "multipart", "swagger_ui_bundle")
    if args.backend == "onnx":
        require_extra("export", "onnxruntime")
    if not 0 <= args.port <= 65535:
        raise FmnistError(f"--port must be in 0..65535, got {args.port}")
    if not 0 < args.max_upload_mb < 1e6:
        raise FmnistError(f"--max-upload-mb must be a positive number of megabytes (below 1,000,000), got "
                          f"{args.max_upload_mb}")
    import uvicorn

    from fmnist.serve import LOOPBACK_HOSTS, create_app

    token = args.token or os.environ.get("FMNIST_TOKEN") or None
    if token == "auto":
        import secrets

        token = secrets.token_urlsafe(24)
    loopback = args.host == "localhost" or _is_loopback(args.host)
    hosts = {*LOOPBACK_HOSTS, args.host, *(args.allow_host or [])}
    if args.host in ("0.0.0.0", "::", ""):  # every interface: the machine's own names and addresses too
        names = {socket.gethostname(), socket.getfqdn()}
        hosts |= names | {a[4][0] for n in names for a in _addresses(n)}
    app = create_app(args.run_dir, backend=args.backend, max_body_bytes=int(args.max_upload_mb * 1e6),
                     allowed_hosts=tuple(sorted(hosts)), token=token)
    # bind here, before uvicorn, so that a bad host or a port in use is one line and exit 2 (uvicorn exits 3)
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        raise FmnistError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    print(f"serving {args.run_dir} at http://{shown}:{port}/" + (f"#token={token}" if token else "")
          + "  (the page; the API at /docs; Ctrl-C stops)", flush=True)
    if not loopback and token is None:
        print(f"warning: listening on {args.host} without a token: anyone who can reach this port can use the "
              "model (--token auto makes one)", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info"))
    server.run(sockets=[sock])
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _addresses(name: str) -> list:
    import socket

    try:
        return socket.getaddrinfo(name, None)
    except OSError:
        return []


def _or(value: Any, default: Any) -> Any:
    """The option's value where given (0 included), else its default."""
    return default if value is None else value


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fmnist.bench import bench
    from fmnist.files import prepare_out_dir, write_json
    from fmnist.run import provenance

    if args.time_to_accuracy and args.time_to_seed:
        raise FmnistError("give one of --time-to-accuracy and --time-to-seed")
    mode = "--time-to-accuracy" if args.time_to_accuracy else "--time-to-seed" if args.time_to_seed else None
    # Each option belongs to one mode: one given to another would be ignored without a word, so refuse it.
    belongs = {"--models": (args.models, None), "--epochs": (args.epochs, None),
               "--batch-size": (args.batch_size, None), "--seeds": (args.seeds, "--time-to-accuracy"),
               "--timed-epochs": (args.timed_epochs, "--time-to-seed"),
               "--preset": (args.preset_given, mode or "--time-to-accuracy or --time-to-seed")}
    for flag, (value, its_mode) in belongs.items():
        if value is not None and its_mode != mode:
            raise FmnistError(f"{flag} applies only {'with ' + its_mode if its_mode else 'to the plain bench'}, "
                              f"not {'with ' + mode if mode else 'to the plain bench'}")
    if args.seeds is not None and args.seeds < 1:
        raise FmnistError(f"--seeds must be at least 1, got {args.seeds}")
    if Path(args.out).is_dir():
        raise FmnistError(f"--out {args.out}: is a directory; bench writes a JSON file (e.g. bench.json)")
    prepare_out_dir(Path(args.out).parent, existing="keep")
    ds = _load(args)
    if args.time_to_seed:
        from fmnist.bench import format_time_to_seed_figure, time_to_seed_figure

        res = time_to_seed_figure(ds, preset=args.preset_given or "fast", timed_epochs=_or(args.timed_epochs, 2),
                                  device=args.device)
        print(format_time_to_seed_figure(res))
    elif args.time_to_accuracy:
        from fmnist.bench import format_time_to_accuracy, time_to_accuracy

        res = time_to_accuracy(ds, args.preset_given or "best", seeds=_or(args.seeds, 1), device=args.device)
        print(format_time_to_accuracy(res))
    else:
        res = bench(ds, _or(args.models, "lenet5,cnn_basic").split(","), epochs=_or(args.epochs, 1),
                    batch_size=_or(args.batch_size, 128), device=args.device)
    res["provenance"] = provenance()
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


def _add_run_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """Data, training, --out and --quiet: the options of every command that trains."""
    _add_data_args(p)
    _add_train_args(p)
    p.add_argument("--out", metavar="DIR", help=out_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--mlflow", nargs="?", const="", metavar="URI",
                   help="also log to MLflow (trials and folds as nested runs): a tracking URI such as "
                        "sqlite:///mlflow.db or http://host:5000; without one $MLFLOW_TRACKING_URI or "
                        "sqlite:///mlflow.db (needs fmnist[mlflow])")


def _add_input_args(p: argparse.ArgumentParser) -> None:
    """A run and the inputs to run it on, and how pictures are prepared: predict and explain."""
    from fmnist.predict import PREPROCESS

    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("files", metavar="FILE", nargs="+")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="dark-on-light photos need inverting: auto decides from the image border")
    p.add_argument("--preprocess", choices=PREPROCESS, default="dataset",
                   help="pictures: dataset (default) prepares them as Fashion-MNIST's were made from shop photos: "
                        "trim the background, longest edge to 28, sharpen, centre; fit: the whole picture fitted "
                        "into 28x28; none: resized to 28x28. 28x28 pictures are used as they are")


def _add_storage_args(p: argparse.ArgumentParser, name_help: str) -> None:
    g = p.add_argument_group("shared study (scale out: run the same command on several machines)")
    g.add_argument("--storage", metavar="URL",
                   help="Optuna storage, e.g. postgresql://user:pass@host/db (default: SQLite in --out)")
    g.add_argument("--study-name", help=name_help)
    g.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    g.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                   help="a trial whose worker is silent for 3 heartbeats is failed and re-queued (default 10)")


def _add_training_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model, evaluate it on the test set, save the run",
                       description="Train MODEL (see `fmnist models`) on a stratified holdout of the training "
                                   "data, validate each epoch, evaluate once on the test set and write a run "
                                   "directory. Defaults are the model's recipe (from its reference "
                                   "project, see `fmnist models`).")
    p.add_argument("model", metavar="MODEL", help="a model (`fmnist models`) or a preset: fast, best, max")
    _add_run_args(p, "run directory (default runs/MODEL-TIMESTAMP); an existing run is refused unless "
                     "--overwrite or --resume")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (its files are deleted first)")
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
                   help="quick: every technique with a converging recipe, about 14 min on 2 CPU cores; full: the "
                        "reference projects' own settings (50 epochs, 5 folds, 20 trials), hours; tiny: a smoke test")
    p.add_argument("--data", metavar="PATH", help="as for `fmnist data`")
    p.add_argument("--test-data", metavar="PATH")
    p.add_argument("--out", metavar="DIR", help="default runs/study-PROFILE")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--mlflow", nargs="?", const="", metavar="URI",
                   help="also log every step to MLflow, nested under one study run (see `fmnist train --help`)")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("tune", help="hyperparameter search (grid, random, TPE) on Optuna",
                       description="Search hyperparameters on the validation split (never the test set) with "
                                   "median pruning; the study lives in an Optuna storage (SQLite in --out by "
                                   "default) so a stopped search resumes and several processes can share it. "
                                   "The best configuration is retrained and tested once.")
    p.add_argument("model", metavar="MODEL", nargs="?", help="default: the preset's model")
    p.add_argument("--space", default="lr-wd",
                   help="a named space (seed000: reference project 000's grid; seed001: reference project 001's "
                        "random search; lr-wd) or a TOML file")
    p.add_argument("--sampler", choices=("grid", "random", "tpe"), default="tpe")
    p.add_argument("--trials", type=int, help="finished trials wanted in the study (default: grid size or 20)")
    _add_storage_args(p, "default tune-MODEL")
    p.add_argument("--metric", choices=("val_acc", "val_loss"), default="val_acc")
    p.add_argument("--no-retrain", action="store_true",
                   help="skip retraining and testing the best configuration (extra workers of a shared study)")
    _add_run_args(p, "output directory (default runs/tune-MODEL)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("cv", help="stratified k-fold cross-validation",
                       description="Train MODEL once per fold of a stratified k-fold split of the training data; "
                                   "per-fold curves, validation and test accuracy, mean and std. Each fold is a "
                                   "trial of an Optuna study (SQLite in --out, or --storage): rerunning resumes, "
                                   "and several workers given the same --storage share the folds.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--repeats", type=int, default=1,
                   help="repeated k-fold: redraw the folds with seed+1, seed+2, ... (default 1)")
    _add_storage_args(p, "default cv-MODEL-<hash of the settings>")
    _add_run_args(p, "output directory (default runs/cv-MODEL)")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("labels", help="find likely label errors in the training and test data (cleanlab)",
                       description="Out-of-fold probabilities of every training row (k-fold cross-validation, as "
                                   "`fmnist cv`: resumable, shareable with --storage) and test probabilities from a "
                                   "model trained on the training split, then confident learning (cleanlab) finds "
                                   "the labels that look wrong. Writes OUT/label_issues.csv (split, index, given, "
                                   "suggested, score; most likely first), suspects.png and summary.json.")
    p.add_argument("model", metavar="MODEL", nargs="?", default="fast",
                   help="a model or preset (default fast: about 10 min for the 60,000 + 10,000 images on 2 cores)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--retrain", action="store_true",
                   help="also train without the training suspects and compare test accuracy with the all-rows model")
    _add_storage_args(p, "default cv-MODEL-<hash of the settings>")
    _add_data_args(p)
    _add_train_args(p)
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/labels)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("evaluate", help="evaluate a saved run on a dataset",
                       description="Accuracy, loss, per-class precision/recall/F1, confusion matrix, "
                                   "misclassified examples with heatmaps of what drove them, calibration (ECE and "
                                   "a reliability diagram, before and after the run's temperature), prediction-set "
                                   "coverage, and a 2-D map of the model's features, on a dataset's test split.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_data_args(p)
    p.add_argument("--out", metavar="DIR", help="where to write (default RUN_DIR/evaluation)")
    p.add_argument("--no-embedding", action="store_true",
                   help="skip the embedding map (a t-SNE of the model's features: ~1 min for 10,000 images)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict the class of images, .npy arrays or CSV rows",
                       description="Top-3 classes for each input: PNG/JPEG of any size or colour (prepared as the "
                                   "dataset's images were, see --preprocess), .npy arrays (28x28, N x 784, ...) "
                                   "and CSV rows of 784 pixels.")
    _add_input_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx: run the exported model with onnxruntime (RUN_DIR/model.int8.onnx when `fmnist export "
                        "--quantize int8` wrote one, else model.onnx)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("calibrate", help="refit a run's calibration (another set level)",
                       description="Refit the temperature and the conformal prediction-set threshold on the run's "
                                   "own validation split (rebuilt from its seed; give the data it was trained on): "
                                   "to choose another set level, or to calibrate a run saved by an older fmnist.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--level", type=float, default=0.9,
                   help="prediction sets hold the true class with this probability (default 0.9)")
    _add_data_args(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("explain", help="heatmaps of what drove a run's predictions on images",
                       description="For each input (pictures, .npy arrays, CSV rows; prepared as for `predict`), "
                                   "write OUT/NAME.explain.png: the 28x28 the model saw, a heatmap of the pixels "
                                   "that drove its prediction, and the top classes with the prediction set.")
    _add_input_args(p)
    p.add_argument("--out", metavar="DIR", help="where to write (default RUN_DIR/explain)")
    from fmnist.explain import METHODS

    p.add_argument("--method", choices=METHODS, default="auto",
                   help="gradcam (convolutional nets), integrated_gradients (any model); auto (default): Grad-CAM "
                        "where the model has convolutions")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("bench", help="training/inference speed beside a plain PyTorch loop",
                       description="Per model: parameters, training images/s of fmnist's loop and of the plain "
                                   "PyTorch loop (TensorDataset + DataLoader, fp32) measured side by side in one "
                                   "run, their ratio, test accuracy after the same epochs, batch-1 latency and "
                                   "large-batch inference throughput. Writes bench.json.")
    p.add_argument("--models", help="comma list (default lenet5,cnn_basic)")
    p.add_argument("--epochs", type=int, help="training epochs per loop (default 1)")
    p.add_argument("--batch-size", type=int, help="training batch size of both loops (default 128)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--time-to-accuracy", action="store_true",
                   help="instead: train --preset and print the training time at which each of 90-95%% test "
                        "accuracy was first reached")
    p.add_argument("--time-to-seed", action="store_true",
                   help="instead: the training time to the reference projects' best figure (91.37%%, seed 002's "
                        "CNN2) with fmnist's --preset against CNN2's own recipe in the plain PyTorch loop (Adam "
                        "1e-4, batch 64, 50 epochs; estimated from --timed-epochs timed epochs), side by side")
    p.add_argument("--timed-epochs", type=int, help="with --time-to-seed (default 2)")
    p.add_argument("--preset", dest="preset_given", metavar="PRESET",
                   help="with --time-to-accuracy (default best) or --time-to-seed (default fast): fast, best, max")
    p.add_argument("--seeds", type=int, help="with --time-to-accuracy: runs, for mean ± std (default 1)")
    p.add_argument("--out", default="bench.json", metavar="FILE", help="results as JSON (default bench.json)")
    _add_data_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("runs", help="list run directories: model, accuracy, time",
                       description="A table of the run directories under DIR (default ./runs): model, test and "
                                   "validation accuracy, training time, parameters, date.")
    p.add_argument("dirs", metavar="DIR", nargs="*")
    p.add_argument("--sort", choices=("test", "val", "time", "date", "model"), default="test")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="compare runs on the same test images (McNemar's test)",
                       description="Runs side by side: settings that differ, accuracy per epoch and per class, and "
                                   "for each pair the accuracy difference with its 95%% interval and McNemar's exact "
                                   "test on the test images exactly one of the two gets right. Writes compare.json "
                                   "and compare.png.")
    p.add_argument("runs", metavar="RUN_DIR", nargs="+")
    p.add_argument("--out", metavar="DIR", help="default runs/compare")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="export a run to ONNX or TorchScript",
                       description="Write RUN_DIR/model.onnx (dynamic batch axis, checked with onnxruntime "
                                   "against PyTorch on test images) or RUN_DIR/model.pt (TorchScript).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--out", metavar="FILE")
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
    _add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve a run: JSON API and a web page",
                       description="FastAPI service: POST /predict (image upload or JSON pixels), "
                                   "/predict/batch, GET /health, /model, OpenAPI docs at /docs, a page at /.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (local only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000 (0: any free port)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--max-upload-mb", type=float, default=5.0, help="largest request body (default 5 MB)")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="another host name requests may be addressed to (repeatable; * for any): by default only "
                        "the bound address and, for loopback, localhost, so that no other site's page reaches the "
                        "service through DNS rebinding")
    p.add_argument("--token", metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' on predictions, explanations and /model (at least "
                        "16 characters; auto: a random one, printed in the page's address; default "
                        "$FMNIST_TOKEN); for a service bound beyond loopback")
    p.set_defaults(func=cmd_serve)


PATH_OPTIONS = ("out", "data", "test_data", "run_dir", "storage", "space")


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
    for name in PATH_OPTIONS:  # an empty path would silently mean the default (or the current directory)
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


if __name__ == "__main__":
    sys.exit(main())
