import json

import pytest

from fmnist.cli import main
from fmnist.recipes import get_preset


def test_bench_runs_on_a_tiny_setting(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "lenet5", "--limit", "256", "--test-limit", "64", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["models"]["lenet5"]
    assert r["parameters"] == 44426
    assert r["fmnist_train_images_per_s"] > 0 and r["reference_train_images_per_s"] > 0 and r["train_speedup"] > 0
    assert r["fmnist_batch1_latency_ms"] > 0
    m = json.loads(out.read_text())["machine"]
    assert m["preset"] == "fast" and m["model"] == "resnet_fm_small" and m["batch_size"] == 256
    # a training step of 256 images through a 226k-parameter conv net is tens of GFLOP (forward and backward)
    assert 5 < m["step_gflop"] < 100
    assert m["achieved_gflops"] == pytest.approx(m["step_gflop"] / m["step_seconds"])
    assert m["peak_gflops"] is None or m["fraction_of_peak"] == pytest.approx(m["achieved_gflops"] / m["peak_gflops"])


def test_time_to_accuracy_on_a_tiny_setting(tmp_path, capsys):
    out = tmp_path / "tta.json"
    assert main(["bench", "--time-to-accuracy", "--preset", "fast", "--seeds", "2", "--limit", "512",
                 "--test-limit", "64", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["preset"] == "fast" and r["model"] == "resnet_fm_small" and len(r["runs"]) == 2
    for run in r["runs"]:
        assert [c["epoch"] for c in run["curve"]] == list(range(1, get_preset("fast").config["epochs"] + 1))
        times = [c["train_seconds"] for c in run["curve"]]
        assert times == sorted(times) and times[0] > 0
        assert set(run["reached"]) == {"90%", "91%", "92%", "93%", "94%", "95%"}
        for th, t in run["reached"].items():  # reached = the first epoch at or above the threshold
            first = next((c for c in run["curve"] if c["test_accuracy"] >= int(th[:-1]) / 100), None)
            assert t == (first["train_seconds"] if first else None)
    assert r["test_accuracy"]["std"] >= 0
    printed = capsys.readouterr().out
    assert "preset fast (resnet_fm_small" in printed and "over 2 seed(s)" in printed


def test_bench_refuses_an_unknown_device_in_one_line(tmp_path, capsys):
    assert main(["bench", "--device", "tpu", "--limit", "64", "--out", str(tmp_path / "b.json")]) == 2
    assert "device 'tpu' unknown; choose from auto, cpu, cuda" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_bench_bad_settings_are_one_line_before_any_table(tmp_path, capsys):
    cases = ((["--models", "lenet6"], "unknown model 'lenet6'"), (["--epochs", "0"], "epochs must be at least 1"))
    for bad, msg in cases:
        assert main(["bench", *bad, "--limit", "64", "--out", str(tmp_path / "b.json")]) == 2
        out, err = capsys.readouterr()
        assert msg in err and "params" not in out
    assert not (tmp_path / "b.json").exists()


def test_bench_refuses_an_option_its_mode_would_ignore(tmp_path, capsys):
    cases = ((["--seeds", "2"], "--seeds applies only with --time-to-accuracy, not to the plain bench"),
             (["--time-to-reference", "--models", "lenet5"], "--models applies only to the plain bench, not with"),
             (["--time-to-accuracy", "--timed-epochs", "3"], "--timed-epochs applies only with --time-to-reference"),
             (["--preset", "fast"], "--preset applies only with --time-to-accuracy or --time-to-reference"),
             (["--time-to-accuracy", "--seeds", "0"], "--seeds must be at least 1, got 0"))
    for bad, msg in cases:
        assert main(["bench", *bad, "--limit", "64", "--out", str(tmp_path / "b.json")]) == 2
        out, err = capsys.readouterr()
        assert msg in err and "params" not in out
    assert not (tmp_path / "b.json").exists()


def test_time_to_reference_on_a_tiny_setting(tmp_path, capsys):
    out = tmp_path / "seed.json"
    assert main(["bench", "--time-to-reference", "--timed-epochs", "1", "--limit", "512", "--test-limit", "64",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["target"] == 0.9137 and r["reference_recipe"]["epochs"] == 50 and r["preset"] == "fast"
    assert r["reference_seconds_estimated"] == r["reference_seconds_per_epoch"] * 50 > 0
    assert "estimated" in r["note"] and "time to 91.37% test accuracy" in capsys.readouterr().out
    assert main(["bench", "--time-to-reference", "--time-to-accuracy", "--limit", "64", "--out", str(out)]) == 2
