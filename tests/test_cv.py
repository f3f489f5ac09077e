import json

from fmnist.cli import main


def test_cv_command_three_folds_and_resume(tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["cv", "lenet5", "--folds", "3", "--limit", "300", "--test-limit", "100", "--epochs", "1",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    s = json.loads((out / "cv.json").read_text())
    assert [r["fold"] for r in s["per_fold"]] == [1, 2, 3]
    assert 0 <= s["val_acc"]["mean"] <= 1 and s["val_acc"]["std"] >= 0 and "test_acc" in s
    assert (out / "fold_curves.png").exists() and (out / "fold_metrics.png").exists()
    (out / "fold_3.json").unlink()  # as if interrupted during fold 3
    capsys.readouterr()
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "fold 1/3: done earlier" in log and "fold 3/3: 200 train" in log
