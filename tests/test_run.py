import json

import numpy as np
import pytest

from fmnist.cli import main
from fmnist.errors import FmnistError
from fmnist.inference import load_checkpoint, numpy_logits
from fmnist.models import list_models, model_info


def test_train_cli_run_round_trips_and_predicts(tmp_path, small_ds, capsys):
    out = tmp_path / "run"
    assert main(["train", "cnn_basic", "--limit", "400", "--test-limit", "200", "--epochs", "1",
                 "--set", "dense_units=64", "--out", str(out), "--quiet"]) == 0
    for f in ("config.json", "history.csv", "metrics.json", "model.safetensors", "learning_curves.png",
              "confusion_matrix.png", "misclassified.png"):
        assert (out / f).exists(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and len(metrics["confusion_matrix"]) == 10
    assert json.loads((out / "config.json").read_text())["model_params"] == {"dense_units": 64}
    model, meta = load_checkpoint(out)
    assert meta["model"] == "cnn_basic"
    logits = numpy_logits(model, small_ds.test.images[:200])
    assert (logits.argmax(1) == small_ds.test.labels[:200]).mean() == pytest.approx(metrics["test_accuracy"])
    # predict on a PNG, a .npy and a CSV row; an unreadable file is reported and the rest still predicted
    from PIL import Image
    Image.fromarray(255 - small_ds.test.images[0]).resize((90, 90)).convert("RGB").save(tmp_path / "photo.png")
    np.save(tmp_path / "x.npy", small_ds.test.images[:2])
    (tmp_path / "rows.csv").write_text(",".join(map(str, small_ds.test.images[3].reshape(-1))) + "\n")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    capsys.readouterr()
    rc = main(["predict", str(out), str(tmp_path / "photo.png"), str(tmp_path / "bad.png"),
               str(tmp_path / "x.npy"), str(tmp_path / "rows.csv"), "--json"])
    cap = capsys.readouterr()
    assert rc == 2 and "bad.png: not a readable image" in cap.err
    preds = json.loads(cap.out)
    assert len(preds) == 4 and all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in preds)


def test_train_a_preset_by_name(tmp_path, capsys):
    import json

    from fmnist.cli import main

    out = tmp_path / "run"
    assert main(["train", "fast", "--epochs", "1", "--limit", "1000", "--test-limit", "100", "--out", str(out),
                 "--quiet"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "resnet_fm_small" and cfg["tta"] and cfg["epochs"] == 1  # the option beats the preset
    # presets hold out 2% to calibrate probabilities and prediction sets
    assert cfg["val_fraction"] == 0.02 and cfg["data"]["train_rows"] == 980 and cfg["data"]["val_rows"] == 20
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] > 0  # 20 are enough to fit
    assert 0 <= metrics["test_accuracy"] <= 1
    capsys.readouterr()
    assert main(["train", "lenet5", "--preset", "nope", "--limit", "100", "--out", str(tmp_path / "x")]) == 2
    assert "preset 'nope' unknown; choose from fast, best, max" in capsys.readouterr().err
    assert main(["train", "fast", "--no-tta", "--limit", "100", "--out", str(tmp_path / "y")]) == 2
    assert "tta_shifts needs tta" in capsys.readouterr().err and not (tmp_path / "y").exists()
    assert main(["train", "efficientnet_lite0_tl", "--set", "weights=none", "--optimizer", "muon", "--limit", "100",
                 "--out", str(tmp_path / "z")]) == 2  # a linear head on a frozen backbone: no matrix for Muon
    assert "has no hidden weight matrices" in capsys.readouterr().err and not (tmp_path / "z").exists()
    assert main(["train", "fast", "--patience", "2", "--val-fraction", "0", "--limit", "100", "--out",
                 str(tmp_path / "y")]) == 2
    assert "patience (early stopping) needs a validation split" in capsys.readouterr().err


@pytest.mark.parametrize("name", list_models())
def test_library_and_cli_resolve_the_same_config_for_every_model(name):
    from fmnist.cli import build_parser, train_config_from_args
    from fmnist.config import TrainConfig

    args = build_parser().parse_args(["train", name, "--epochs", "1"])
    assert train_config_from_args(args.model, args) == TrainConfig.for_model(name, epochs=1)
    info = model_info(name)
    for k, v in (info.recipe or {}).items():  # the model's recipe, not the generic defaults
        if k != "epochs":
            assert getattr(TrainConfig.for_model(name), k) == v, k


@pytest.mark.parametrize("preset", ["fast", "best", "max"])
def test_library_and_cli_resolve_the_same_config_for_every_preset(preset):
    from fmnist.cli import build_parser, train_config_from_args
    from fmnist.config import TrainConfig
    from fmnist.recipes import PRESETS

    def cli(*argv):
        args = build_parser().parse_args(["train", *argv])
        return train_config_from_args(args.model, args)

    assert cli(preset) == TrainConfig.for_model(preset) == TrainConfig.for_model(PRESETS[preset].name)
    assert cli(preset, "--lr", "0.05") == TrainConfig.for_model(preset, lr=0.05)
    assert cli("lenet5", "--preset", preset) == TrainConfig.for_model("lenet5", preset=preset)
    assert TrainConfig.for_model(preset).model == PRESETS[preset].model
    # the preset's model parameters go with its own model only; --set beats them
    assert TrainConfig.for_model(preset).model_params == PRESETS[preset].model_params
    assert TrainConfig.for_model("lenet5", preset=preset).model_params == {}
    assert cli(preset, "--set", "stem=conv").model_params == {"stem": "conv"}
    with pytest.raises(FmnistError, match="unknown training setting lrr"):
        TrainConfig.for_model(preset, lrr=1)


def test_train_returns_a_typed_run_that_loads_back(trained_run, small_ds):
    import fmnist

    run = trained_run
    saved = json.loads((run.dir / "metrics.json").read_text())
    assert run.metrics["test_accuracy"] == run.metrics.test_accuracy == saved["test_accuracy"]
    assert run.metrics.val_accuracy == saved["val_accuracy"] == run.history.kept_val_accuracy
    assert run.config == fmnist.TrainConfig.for_model("cnn_basic", epochs=2)
    assert fmnist.evaluate(run, small_ds).accuracy == run.metrics.test_accuracy  # one way to measure it
    back = fmnist.Run.load(run.dir)
    assert back.config == run.config and back.metrics == run.metrics and back.history.epoch == [1, 2]
    fig = fmnist.plots.confusion_matrix(run)
    assert type(fig).__name__ == "Figure" and not list(run.dir.glob("*.tmp*"))
    with pytest.raises(KeyError, match="the metrics: model"):
        run.metrics["accuracy"]


def test_the_run_directory_files_are_named_in_one_module():
    import ast
    from pathlib import Path

    from fmnist import rundir

    names = {rundir.CONFIG, rundir.MODEL, rundir.METRICS, rundir.HISTORY, rundir.TRAIN_STATE,
             rundir.TEST_PREDICTIONS, rundir.STEP_RESULT, rundir.MARKER, *rundir.PICTURES, *rundir.EXPORTS}
    src = Path(rundir.__file__).parent
    found = [(str(f.relative_to(src)), node.value) for f in src.rglob("*.py") if f.name != "rundir.py"
             for node in ast.walk(ast.parse(f.read_text())) if isinstance(node, ast.Constant) and node.value in names]
    assert not found, found


def test_provenance_says_whether_the_code_had_uncommitted_changes():
    from fmnist.run import provenance

    p = provenance()
    assert p["uncommitted_changes"] in (True, False, None) and "git_revision" in p
    if p["git_revision"] is None:
        assert p["uncommitted_changes"] is None


def test_a_preset_is_sized_to_small_data_that_is_not_fashion(small_ds):
    from fmnist.config import TrainConfig
    from fmnist.data import Dataset
    from fmnist.run import fit_preset_to_data

    digits = Dataset(small_ds.train, small_ds.test, tuple("0123456789"))  # not Fashion-MNIST's names
    cfg, notes = fit_preset_to_data(TrainConfig.for_model("fast"), digits)
    assert "flip" not in cfg.augment and not cfg.tta and cfg.val_fraction == 0.2 and cfg.epochs == 140
    assert "no mirrored images" in notes[0] and "600 training images, so 140 epochs instead of 7" in notes[1]
    cfg, notes = fit_preset_to_data(TrainConfig.for_model("fast"), small_ds)  # Fashion: flips stay
    assert "altflip" in cfg.augment and cfg.tta and len(notes) == 1
    explicit = TrainConfig.for_model("fast", epochs=3)
    assert fit_preset_to_data(explicit, digits) == (explicit, [])  # explicit settings are kept as given


def test_a_run_is_not_evaluated_on_data_of_other_classes(trained_run, small_ds, tmp_path, capsys):
    x, y = small_ds.test.images[:50], np.arange(50) % 10
    np.savez(tmp_path / "digits.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    assert main(["evaluate", str(trained_run.dir), "--data", str(tmp_path / "digits.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "knows 10 classes (T-shirt/top, Trouser, Pullover, Dress, ...) but" in err and "has 10 (0, 1, 2, 3" in err
