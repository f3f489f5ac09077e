"""Nothing breaks, nobody gets in: crafted files, hostile names, interrupted work and bad calls each end in one
clear line (exit 2) or the right answer, and never delete, run or allocate what they should not."""

import json
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fmnist.cli import main
from fmnist.errors import FmnistError


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("fmnist: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def _npz_dir(path, small_ds, names=None, n=300):
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "d.npz", x_train=small_ds.train.images[:n], y_train=small_ds.train.labels[:n],
             x_test=small_ds.test.images[:100], y_test=small_ds.test.labels[:100])
    if names:
        (path / "classes.txt").write_text("\n".join(names) + "\n")
    return path


# ------------------------------------------------------------------------------------ interrupted work
def test_ctrl_c_in_a_study_step_stops_the_study_and_records_nothing(tmp_path, monkeypatch, capsys):
    import fmnist.loop

    calls = {"n": 0}
    real = fmnist.loop.lr_at

    def interrupted(*a, **k):  # Ctrl-C during the first training step of the first step
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(fmnist.loop, "lr_at", interrupted)
    out = tmp_path / "study"
    assert main(["study", "--profile", "tiny", "--out", str(out), "--quiet"]) == 130
    assert calls["n"] == 1  # stopped at once: no later step trained
    assert not list(out.glob("steps/*/result.json")) and not (out / "results.json").exists()
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(fmnist.loop, "lr_at", real)


# ------------------------------------------------------------------------------------ names are text
def test_a_mathtext_class_name_is_drawn_as_text_and_the_run_is_complete(tmp_path, small_ds, capsys):
    names = ["$\\nosuchcmd$", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "$x"]
    data = _npz_dir(tmp_path / "d", small_ds, names)
    out = tmp_path / "run"
    assert main(["train", "lenet5", "--data", str(data), "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    for f in ("metrics.json", "confusion_matrix.png", "misclassified.png", "reliability.png"):
        assert (out / f).is_file(), f
    assert json.loads((out / "config.json").read_text())["data"]["class_names"][0] == "$\\nosuchcmd$"


def test_class_names_with_control_characters_are_refused(tmp_path, small_ds, capsys):
    names = ["T-shirt\x1b[31m", *[f"c{i}" for i in range(9)]]
    data = _npz_dir(tmp_path / "d", small_ds, names)
    assert main(["data", "--data", str(data)]) == 2
    _one_line_error(capsys, "classes.txt: class name 1", "control character U+001B")


def test_test_data_naming_its_classes_otherwise_is_refused(tmp_path, small_ds, capsys):
    names = [f"c{i}" for i in range(10)]
    train = _npz_dir(tmp_path / "train", small_ds, names)
    test = tmp_path / "test"
    test.mkdir()
    np.savez(test / "t.npz", x_train=small_ds.test.images[:100], y_train=small_ds.test.labels[:100])
    (test / "classes.txt").write_text("\n".join(names[::-1]) + "\n")
    assert main(["data", "--data", str(train), "--test-data", str(test)]) == 2
    _one_line_error(capsys, "test data names its classes otherwise", "'c9' here, 'c0' for training")
    (test / "classes.txt").write_text("\n".join(names) + "\n")  # the same names: accepted
    assert main(["data", "--data", str(train), "--test-data", str(test)]) == 0


# ------------------------------------------------------------------------------------ crafted checkpoints
def _meta(**changes):
    from fmnist.config import TrainConfig
    from fmnist.data import FASHION_CLASSES

    m = {"format": 1, "model": "mlp_512_64", "model_params": {}, "class_names": list(FASHION_CLASSES),
         "config": TrainConfig(model="mlp_512_64").to_dict(), "calibration": None, "ood": None}
    m.update(changes)
    return m


def _crafted(path, meta, tensors=None):
    save_file(tensors or {"w": torch.zeros(2)}, str(path), metadata={"fmnist": meta if isinstance(meta, str)
                                                                     else json.dumps(meta)})
    return path


@pytest.mark.parametrize("changes, needle", [
    ({"class_names": "abc"}, "class_names' must be a list"),
    ({"class_names": ["a"]}, "at least 2"),
    ({"class_names": [1, 2]}, "class_names' must be a list"),
    ({"model": 5}, "model' must be a model name"),
    ({"model": "nosuch"}, "unknown model 'nosuch'"),
    ({"model_params": [1]}, "model_params' must be an object"),
    ({"model_params": {"widths": "x"}}, "parameter widths must be a list"),
    ({"config": {"epochs": "ten"}}, "config' is invalid: epochs must be a int"),
    ({"calibration": {"temperature": "hot"}}, "calibration' must hold numbers"),
    ({"ood": {"energy_threshold": None}}, "ood' must hold a finite"),
    ({"format": 7}, "checkpoint format 7, this fmnist reads format 1 (saved by a newer fmnist"),
    ({"class_names": ["<b>", "a\x07"]}, "control character U+0007"),
])
def test_crafted_checkpoint_metadata_is_one_line(tmp_path, capsys, changes, needle, small_ds):
    f = _crafted(tmp_path / "model.safetensors", _meta(**changes))
    np.save(tmp_path / "x.npy", small_ds.test.images[:1])
    assert main(["predict", str(f), str(tmp_path / "x.npy")]) == 2
    _one_line_error(capsys, "model.safetensors", needle)


def test_deeply_nested_metadata_and_a_huge_declared_model_cost_nothing(tmp_path, capsys, small_ds):
    import resource

    np.save(tmp_path / "x.npy", small_ds.test.images[:1])
    deep = _crafted(tmp_path / "deep.safetensors", '{"model": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert main(["predict", str(deep), str(tmp_path / "x.npy")]) == 2
    _one_line_error(capsys, "deep.safetensors", "nested too deeply")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    huge = _crafted(tmp_path / "huge.safetensors", _meta(model_params={"widths": [100_000_000]}))
    assert huge.stat().st_size < 2000
    assert main(["predict", str(huge), str(tmp_path / "x.npy")]) == 2
    _one_line_error(capsys, "huge.safetensors", "would have 79,500,000,010 parameters")
    # a file whose tensors are few but whose declared model is valid and large: refused by shape, not built
    big = _crafted(tmp_path / "big.safetensors", _meta(model_params={"widths": [20_000, 20_000]}))
    assert main(["predict", str(big), str(tmp_path / "x.npy")]) == 2
    _one_line_error(capsys, "big.safetensors", "weights do not fit model 'mlp_512_64' (missing")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, grown_mb  # the 400M-parameter model (1.6 GB) was never allocated


def test_a_foreign_or_malformed_train_state_is_one_line_on_resume(tmp_path, capsys):
    from fmnist.config import TrainConfig
    from fmnist.files import prepare_out_dir
    from fmnist.loop import TrainState
    from fmnist.models import create_model

    args = ["train", "lenet5", "--limit", "200", "--test-limit", "50", "--epochs", "1", "--quiet", "--resume"]
    run = prepare_out_dir(tmp_path / "run", mark_run=True)
    torch.save([1, 2, 3], run / "train_state.pt")
    assert main(args + ["--out", str(run)]) == 2
    _one_line_error(capsys, "train_state.pt: not a training state fmnist wrote (a list")
    cfg = TrainConfig.for_model("lenet5", epochs=1)
    foreign = create_model("cnn_basic")  # another model's weights under the right config
    opt = torch.optim.Adam(foreign.parameters())
    TrainState(config=cfg.to_dict(), model=foreign.state_dict(), optimizer=opt.state_dict(), ema=None,
               generator=torch.Generator().get_state(), torch_rng=torch.get_rng_state(), cuda_rng=None, history={},
               best_loss=1.0, best_state=None, since_best=0, step=1, seen=1, seconds=1.0).save(run / "train_state.pt")
    assert main(args + ["--out", str(run)]) == 2
    _one_line_error(capsys, "the training state does not fit model 'lenet5'")


# ------------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize("extra, needle", [
    (["--set", "hidden=0"], "parameter hidden must be a whole number of at least 1"),
    (["--set", "hidden=-1"], "parameter hidden must be a whole number of at least 1"),
    (["--seed", "-1"], "seed must be a whole number from 0 to 4,294,967,295"),
    (["--seed", str(2**40)], "seed must be a whole number from 0"),
])
def test_bad_training_values_are_one_line(tmp_path, capsys, extra, needle):
    args = ["train", "mlp_5x128", "--limit", "100", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]
    assert main(args + extra) == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "r").exists()


def test_an_empty_path_is_refused_not_taken_for_the_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "lenet5", "--out", ""])
    assert e.value.code == 2 and "--out: an empty path" in capsys.readouterr().err


def test_widths_that_build_no_model_are_one_line(tmp_path, capsys):
    assert main(["train", "mlp_512_64", "--limit", "100", "--set", "widths=[-1]", "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "parameter widths must be a list of whole numbers of at least 1")


def test_library_calls_with_the_wrong_types_say_what_they_expected(small_ds, trained_run):
    import fmnist
    from fmnist.config import TrainConfig
    from fmnist.models import create_model

    with pytest.raises(FmnistError, match="train: data must be a Dataset .* got str"):
        fmnist.train("mlp_512_64", "notdata")
    with pytest.raises(FmnistError, match="fit: train must be a Split, got str"):
        fmnist.fit(create_model("lenet5"), "notdata", None, TrainConfig())
    with pytest.raises(FmnistError, match="evaluate: data must be a Dataset or a Split .* got str"):
        fmnist.evaluate(trained_run, "notdata")
    with pytest.raises(FmnistError, match="train_run: config must be a TrainConfig, got str"):
        fmnist.train_run("lenet5", small_ds)


def test_an_extra_that_fails_to_import_is_the_one_line_message(tmp_path, monkeypatch):
    from fmnist.errors import Unavailable, require_extra

    (tmp_path / "broken_extra_mod.py").write_text("raise RuntimeError('built for another platform')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Unavailable, match=r"needs broken_extra_mod \(fails to import: RuntimeError\), from "
                                          r"fmnist's optional extra 'export': pip install 'fmnist\[export\]'"):
        require_extra("export", "broken_extra_mod")
    with pytest.raises(Unavailable, match="needs no_such_mod_x, from"):
        require_extra("export", "no_such_mod_x")


def test_runs_with_metrics_of_another_shape_are_listed_safely(tmp_path, trained_run, capsys):
    import shutil

    for name, metrics, cfg in (("a", [1, 2], {}), ("b", {"model": ["x"], "test_accuracy": "high"}, []),
                               ("c", {"model": "m", "test_accuracy": 0.5, "parameters": "many"}, {"epochs": "x"})):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        shutil.copy(trained_run.dir / "model.safetensors", d)
        (d / "metrics.json").write_text(json.dumps(metrics))
        (d / "config.json").write_text(json.dumps(cfg))
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "runs/c" in out and "50.00%" in out and "runs/a" not in out and "runs/b" not in out
    with pytest.raises(FmnistError, match="metrics.json: not the metrics of a fmnist run"):
        fmnist_run_load(tmp_path / "runs" / "c")


def fmnist_run_load(d):
    from fmnist.run import Run

    return Run.load(d)


def test_evaluate_on_a_one_image_test_set(trained_run, tmp_path, small_ds, capsys):
    np.savez(tmp_path / "one.npz", x_train=small_ds.train.images[:50], y_train=small_ds.train.labels[:50],
             x_test=small_ds.test.images[:1], y_test=small_ds.test.labels[:1])
    (tmp_path / "classes.txt").write_text("\n".join(small_ds.class_names) + "\n")  # the run's classes, by name
    assert main(["evaluate", str(trained_run.dir), "--data", str(tmp_path / "one.npz"), "--out",
                 str(tmp_path / "ev")]) == 0
    assert "no embedding map: 1 images are too few" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] == 1


# ------------------------------------------------------------------------------------ data files
def test_csv_problems_name_the_line_and_field(tmp_path, small_ds, capsys):
    from conftest import write_csv

    px = [list(small_ds.train.images[i].reshape(-1)) for i in range(3)]
    px[1][4] = "inf"
    write_csv(tmp_path / "train.csv", [0, 1, 2], px)
    assert main(["data", "--data", str(tmp_path / "train.csv")]) == 0
    assert "line 3: pixel5 is not a finite number (inf)" in capsys.readouterr().err
    (tmp_path / "wide.csv").write_text(",".join(["1"] * 300_000) + "\n")  # 600 KB on one line
    assert main(["data", "--data", str(tmp_path / "wide.csv")]) == 2
    _one_line_error(capsys, "wide.csv: line 1 is over 64 KB without a line break")


def test_all_rows_dropped_says_why(tmp_path, capsys):
    x = np.zeros((4, 28, 28), np.uint8)  # one image with two labels: every copy a conflicting duplicate
    np.savez(tmp_path / "z.npz", x_train=x, y_train=np.array([0, 1, 0, 1]))
    assert main(["data", "--data", str(tmp_path / "z.npz")]) == 2
    _one_line_error(capsys, "no usable train rows: cleaning dropped all 4", "conflicting duplicates")


def test_a_16_bit_png_predicts_like_its_8_bit_copy(trained_run, small_ds, tmp_path, capsys):
    from PIL import Image

    from fmnist.predict import image_to_array

    img8 = np.asarray(Image.fromarray(255 - small_ds.test.images[3]).resize((112, 112)))
    Image.fromarray(img8).save(tmp_path / "p8.png")
    Image.fromarray(img8.astype(np.uint16) * 257).save(tmp_path / "p16.png")
    assert Image.open(tmp_path / "p16.png").mode.startswith("I")
    a8, a16 = image_to_array(tmp_path / "p8.png"), image_to_array(tmp_path / "p16.png")
    assert np.array_equal(a8, a16) and a8.max() > 200
    assert main(["predict", str(trained_run.dir), str(tmp_path / "p8.png"), str(tmp_path / "p16.png"),
                 "--json"]) == 0
    p8, p16 = json.loads(capsys.readouterr().out)
    assert p8["probabilities"] == p16["probabilities"]


# ------------------------------------------------------------------------------------ full disk
def test_a_full_disk_is_one_line_and_keeps_the_earlier_files(tmp_path, capsys):
    import os

    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root and can mount a small tmpfs")
        pytest.skip("needs root to mount a small tmpfs")
    try:
        # mlp_512_64's 570k parameters (2.3 MB) do not fit in 150 KB: the checkpoint cannot be written
        assert main(["train", "mlp_512_64", "--limit", "100", "--test-limit", "20", "--epochs", "1", "--quiet",
                     "--out", str(mnt / "run")]) == 2
        _one_line_error(capsys, "cannot be written (no space left on the device); an earlier file there is kept")
        assert not [f for f in os.listdir(mnt / "run") if f.endswith(".tmp") or ".tmp." in f]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # lazy: a file a failed write left open


def test_a_damaged_onnx_file_is_one_line(trained_run, tmp_path, small_ds, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run.dir, run)
    (run / "model.onnx").write_bytes(b"\x08\x07" + b"\xff" * 300)
    np.save(tmp_path / "x.npy", small_ds.test.images[:1])
    assert main(["predict", str(run), str(tmp_path / "x.npy"), "--backend", "onnx"]) == 2
    _one_line_error(capsys, "model.onnx: not a readable ONNX model")


def test_file_names_with_escape_sequences_are_printed_inert(trained_run, tmp_path, small_ds, capsys):
    from fmnist.errors import printable

    assert printable("a\x1b[2Jb\rc") == "a\\x1b[2Jb\\rc" and printable("Ankle boot") == "Ankle boot"
    f = tmp_path / "x\x1b[31mred.npy"
    np.save(f, small_ds.test.images[:1])
    assert main(["predict", str(trained_run.dir), str(f), str(tmp_path / "gone\x1b]0;title\x07.png")]) == 2
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\\x1b[31mred.npy:" in out and "gone\\x1b]0;title\\x07.png" in err


def test_array_files_declaring_more_than_they_hold_are_refused_before_allocation(trained_run, tmp_path, capsys):
    import io
    import zipfile

    from numpy.lib import format as npy

    def member(shape, descr="|u1"):
        b = io.BytesIO()
        npy.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
        return b.getvalue() + b"\0" * 100

    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as z:  # 1 KB declaring 7.8 GB of images
        z.writestr("x_train.npy", member((10**7, 28, 28)))
        z.writestr("y_train.npy", member((10**7,)))
    assert main(["data", "--data", str(tmp_path / "bomb.npz")]) == 2
    _one_line_error(capsys, "bomb.npz: x_train: its header declares 10000000x28x28 uint8 values",
                    "but the file holds 228 bytes")
    (tmp_path / "big.npy").write_bytes(member((10**12,), "<f8"))
    assert main(["predict", str(trained_run.dir), str(tmp_path / "big.npy")]) == 2
    _one_line_error(capsys, "big.npy: its header declares 1000000000000 float64 values")
