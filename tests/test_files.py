import json
import math
import os

import numpy as np
import pytest

from fmnist.cli import main
from fmnist.errors import FmnistError
from fmnist.files import dumps, prepare_out_dir, write_json


def test_json_is_strict():
    text = dumps({"a": math.nan, "b": [np.float32(1.5), np.float64("inf")], "c": np.arange(2)})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {"a": None, "b": [1.5, None],
                                                                                   "c": [0, 1]}


def test_out_dir_checks(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(FmnistError, match="file.txt: exists and is not a directory"):
        prepare_out_dir(f)
    with pytest.raises(FmnistError, match=r"file.txt/sub: cannot be created, .*file.txt is a file"):
        prepare_out_dir(f / "sub")
    with pytest.raises(FmnistError, match="/proc/fmnist-x: cannot write there"):
        prepare_out_dir("/proc/fmnist-x")
    with pytest.raises(FmnistError, match="not a directory fmnist marked as its run"):
        prepare_out_dir(tmp_path, existing="overwrite")
    with pytest.raises(FmnistError, match="--out: an empty path"):
        prepare_out_dir("")
    run = tmp_path / "run"
    prepare_out_dir(run, mark_run=True)
    write_json(run / "metrics.json", {})
    (run / "learning_curves.png").write_text("x")
    (run / "evaluation").mkdir()
    (run / "evaluation" / "metrics.json").write_text("{}")
    (run / "notes.txt").write_text("mine")  # the user's own file in a run directory stays
    with pytest.raises(FmnistError, match="already holds a run; give --overwrite .* --resume"):
        prepare_out_dir(run)
    prepare_out_dir(run, existing="overwrite", mark_run=True)
    assert sorted(os.listdir(run)) == [".fmnist-run", "notes.txt"]


def test_overwrite_never_deletes_a_directory_fmnist_did_not_mark(tmp_path, capsys):
    project = tmp_path / "project"  # a project folder that happens to hold files named like a run's
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('hi')")
    (project / "notes.txt").write_text("notes")
    (project / "config.json").write_text("{}")
    (project / "metrics.json").write_text("{}")
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    assert main(["train", "lenet5", "--limit", "200", "--test-limit", "50", "--epochs", "1", "--quiet",
                 "--out", str(project), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a directory fmnist marked as its run" in err and err.count("\n") == 1
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before
    assert (project / "src" / "main.py").read_text() == "print('hi')"


def test_rerun_into_a_run_needs_overwrite_and_leaves_no_stale_file(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "lenet5", "--limit", "200", "--test-limit", "50", "--epochs", "1", "--quiet", "--out", str(out)]
    assert main(args + ["--augment", "flip"]) == 0
    assert (out / "augmentation.png").exists()
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run; give --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert not (out / "augmentation.png").exists()  # the old run's picture went with it
    for name in ("metrics.json", "config.json"):  # strict JSON: a run without validation has null, not NaN
        json.loads((out / name).read_text(), parse_constant=lambda c, n=name: pytest.fail(f"bare {c} in {n}"))


def test_no_validation_split_gives_null_not_nan(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "lenet5", "--limit", "200", "--test-limit", "50", "--epochs", "1", "--val-fraction", "0",
                 "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert m["val_accuracy"] is None
    assert (out / "history.csv").read_text().splitlines()[1].split(",")[3:5] == ["", ""]
