import json

import pytest

from fmnist.cli import main
from fmnist.errors import FmnistError
from fmnist.tuning import load_space


def test_reference001_random_search_resumes_from_storage(tmp_path, capsys):
    out = tmp_path / "tune"
    base = ["tune", "--space", "reference001", "--sampler", "random", "--limit", "300", "--test-limit", "100",
            "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(base + ["--trials", "2", "--no-retrain"]) == 0
    r = json.loads((out / "tune.json").read_text())
    assert r["n_trials"] == 2 and set(r["best_params"]) == {"dense_units", "lr"}
    assert 64 <= r["best_params"]["dense_units"] <= 128
    capsys.readouterr()
    assert main(base + ["--trials", "3"]) == 0  # same storage: one more trial, then the retrain
    out_text = capsys.readouterr().out
    r = json.loads((out / "tune.json").read_text())
    assert r["n_trials"] == 3 and 0 <= r["best_run"]["test_accuracy"] <= 1
    assert "2 of 3 trial(s) finished; joining" in out_text
    for f in ("trials.csv", "optimization_history.png", "params.png", "best/metrics.json"):
        assert (out / f).exists(), f


def test_space_file_errors_are_clear(tmp_path):
    f = tmp_path / "space.toml"
    f.write_text("[params.lr]\ntype = 'float'\nlow = 0.001\n")
    with pytest.raises(FmnistError, match="params.lr needs high"):
        load_space(str(f))
    with pytest.raises(FmnistError, match="neither a named space"):
        load_space("nope")


def test_joining_a_study_with_other_settings_names_the_setting(tmp_path, capsys):
    base = ["tune", "lenet5", "--trials", "1", "--epochs", "1", "--limit", "200", "--test-limit", "50",
            "--no-retrain", "--quiet", "--out", str(tmp_path / "t")]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base + ["--lr", "0.01"]) == 2
    assert "created with other settings (different: config.lr)" in capsys.readouterr().err


@pytest.mark.parametrize("toml, needle", [
    ("[params.lr]\ntype='float'\nlow=0.1\nhigh=0.01\n", "params.lr: low 0.1 is above high 0.01"),
    ("[params.lr]\ntype='float'\nlow=0\nhigh=0.1\nlog=true\n", "a log scale needs low above 0"),
    ("[params.a]\ntype='categorical'\nchoices=[]\n", "params.a.choices must be a non-empty list"),
    ("[params.widht]\ntype='int'\nlow=1\nhigh=3\n", "widht is neither a training setting nor a parameter of model"),
])
def test_bad_search_spaces_are_refused_before_any_trial(tmp_path, capsys, toml, needle):
    f = tmp_path / "space.toml"
    f.write_text(toml)
    out = tmp_path / "t"
    assert main(["tune", "lenet5", "--space", str(f), "--trials", "1", "--epochs", "1", "--limit", "200",
                 "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and not out.exists()


def test_a_grid_search_cannot_ask_for_more_trials_than_points(tmp_path, capsys):
    f = tmp_path / "space.toml"
    f.write_text("[params.lr]\ntype='categorical'\nchoices=[0.01, 0.02]\n")
    out = tmp_path / "t"
    assert main(["tune", "lenet5", "--space", str(f), "--sampler", "grid", "--trials", "3", "--limit", "200",
                 "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--trials 3 is more than the grid's 2 points") and len(err.splitlines()) == 1
    assert not out.exists()
